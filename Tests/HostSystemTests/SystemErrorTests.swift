import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct SystemErrorTests {
        @Test func openingAMissingFileNamesThePathAndENOENT() {
            let path = "/nonexistent-hostsystem-test/missing-file"
            let error = #expect(throws: SystemError.self) {
                _ = try OwnedFileDescriptor(path: path, flags: O_RDONLY)
            }
            #expect(error?.errno == ENOENT)
            #expect(error?.call == "open(\(path))")
            #expect(error?.description.contains(path) == true)
            #expect(error?.description.contains("No such file or directory") == true)
        }

        @Test func descriptionReadsAsASentence() {
            let error = SystemError(call: "mmap(4096 bytes)", errno: ENOMEM)
            #expect(error.description == "mmap(4096 bytes) failed: Cannot allocate memory (errno \(ENOMEM))")
            #expect(error.reason == "Cannot allocate memory")
        }

        @Test func classifiesInterruptedAndWouldBlock() {
            #expect(SystemError(call: "read", errno: EINTR).isInterrupted)
            #expect(!SystemError(call: "read", errno: EINTR).isWouldBlock)
            #expect(SystemError(call: "read", errno: EAGAIN).isWouldBlock)
            #expect(SystemError(call: "read", errno: EWOULDBLOCK).isWouldBlock)
            #expect(!SystemError(call: "read", errno: EBADF).isInterrupted)
        }

        @Test func retryingInterruptsRetriesOnlyEINTR() throws {
            var attempts = 0
            let result = try retryingInterrupts("fake") { () -> Int32 in
                attempts += 1
                if attempts < 3 {
                    clinux_set_errno(EINTR)
                    return -1
                }
                return 42
            }
            #expect(result == 42)
            #expect(attempts == 3)

            let error = #expect(throws: SystemError.self) {
                _ = try retryingInterrupts("fake(EBADF)") { () -> Int32 in
                    clinux_set_errno(EBADF)
                    return -1
                }
            }
            #expect(error == SystemError(call: "fake(EBADF)", errno: EBADF))
        }

        @Test func checkedDoesNotRetry() {
            var attempts = 0
            let error = #expect(throws: SystemError.self) {
                _ = try checked("fake") { () -> Int32 in
                    attempts += 1
                    clinux_set_errno(EINTR)
                    return -1
                }
            }
            #expect(error?.isInterrupted == true)
            #expect(attempts == 1)
        }
    }
}
