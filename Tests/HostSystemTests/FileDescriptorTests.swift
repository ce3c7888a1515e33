import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct OwnedFileDescriptorTests {
        @Test func closesOnDeinit() throws {
            let (readEnd, writeEnd) = try makePipe()
            let raw = writeEnd.take()
            // Wrapped again and dropped at once: the object owns the write end and closes it.
            _ = OwnedFileDescriptor(adopting: raw)
            clinux_set_errno(0)
            #expect(clinux_fcntl_val(raw, F_GETFD, 0) == -1)
            #expect(clinux_errno() == EBADF)
            // The pipe's only writer is gone, so its reader sees end of file.
            var byte: UInt8 = 0
            let count = try withUnsafeMutableBytes(of: &byte) { (bytes) throws(SystemError) in try readEnd.read(into: bytes) }
            #expect(count == 0)
        }

        @Test func takeHandsOverOwnership() throws {
            let (_, writeEnd) = try makePipe()
            var raw: Int32 = -1
            do {
                let owner = try writeEnd.duplicate()
                raw = owner.take()
                #expect(owner.rawValue == -1)
                #expect(owner.description == "fd -1")
            }
            // The owner is gone but did not close what it gave away.
            #expect(clinux_fcntl_val(raw, F_GETFD, 0) >= 0)
            #expect(close(raw) == 0)
        }

        @Test func duplicateSharesTheFileAndIsCloseOnExec() throws {
            let file = try temporaryFile()
            let copy = try file.duplicate()
            #expect(copy.rawValue != file.rawValue)
            #expect(clinux_fcntl_val(copy.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0)
            #expect(clinux_fcntl_val(file.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0)
            try copy.writeAll(Array("shared".utf8))
            var buffer = [UInt8](repeating: 0, count: 6)
            let count = try buffer.withUnsafeMutableBytes { (bytes) throws(SystemError) in try file.read(into: bytes, at: 0) }
            #expect(count == 6)
            #expect(String(decoding: buffer, as: UTF8.self) == "shared")
        }

        @Test func positionalIOSizeAndTruncate() throws {
            let file = try temporaryFile()
            #expect(try file.size() == 0)
            try file.writeAll(Array("hello".utf8))
            #expect(try file.size() == 5)

            let written = try Array("xy".utf8).withUnsafeBytes { (bytes) throws(SystemError) in try file.write(bytes, at: 10) }
            #expect(written == 2)
            #expect(try file.size() == 12)

            var buffer = [UInt8](repeating: 0xFF, count: 7)
            let count = try buffer.withUnsafeMutableBytes { (bytes) throws(SystemError) in try file.read(into: bytes, at: 5) }
            #expect(count == 7)
            #expect(buffer == [0, 0, 0, 0, 0, UInt8(ascii: "x"), UInt8(ascii: "y")])

            try file.truncate(to: 4096)
            #expect(try file.size() == 4096)
            try file.truncate(to: 3)
            var tail = [UInt8](repeating: 0, count: 8)
            let short = try tail.withUnsafeMutableBytes { (bytes) throws(SystemError) in try file.read(into: bytes, at: 0) }
            #expect(short == 3)
            #expect(Array(tail[0..<3]) == Array("hel".utf8))
        }

        @Test func nonBlockingReadOfAnEmptyPipeWouldBlock() throws {
            let (readEnd, writeEnd) = try makePipe()
            defer { withExtendedLifetime(writeEnd) {} }  // an open writer: no end of file
            try readEnd.setNonBlocking(true)
            var byte: UInt8 = 0
            let error = #expect(throws: SystemError.self) {
                _ = try withUnsafeMutableBytes(of: &byte) { (bytes) throws(SystemError) in try readEnd.read(into: bytes) }
            }
            #expect(error?.isWouldBlock == true)
            #expect(error?.call == "read")
            try readEnd.setNonBlocking(false)
            #expect(clinux_fcntl_val(readEnd.rawValue, F_GETFL, 0) & O_NONBLOCK == 0)
        }
    }
}
