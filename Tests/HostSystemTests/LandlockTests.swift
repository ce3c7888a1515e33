import Foundation
import HostSystem
import Testing

/// The `Landlock` wrapper on this host's kernel, on threads of its own (a restriction lasts
/// for the thread's life, so the test process's other threads stay free).
@Suite("Landlock")
struct LandlockTests {
    static let abi = try? Landlock.supportedABI()

    /// Runs `body` on a new thread and returns what it returned.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) throws -> T {
        let result = ResultBox<T>()
        let thread = try HostThread(name: "landlock-test") { result.value = body() }
        thread.join()
        return result.value!
    }

    final class ResultBox<T>: @unchecked Sendable { var value: T? }

    /// Whether `path` opens with `flags` (0 when it does, else errno).
    static func openError(_ path: String, _ flags: Int32) -> Int32 {
        do {
            _ = try OwnedFileDescriptor(path: path, flags: flags)
            return 0
        } catch {
            return error.errno
        }
    }

    @Test("the rights of each ABI: read is execute, read-file and read-dir; write is the rest; files take only file rights")
    func accessSets() {
        #expect(LandlockAccess.read(abi: 7) == [.execute, .readFile, .readDir])
        #expect(LandlockAccess.all(abi: 1).rawValue == 0x1FFF)
        #expect(LandlockAccess.all(abi: 2).contains(.refer) && !LandlockAccess.all(abi: 2).contains(.truncate))
        #expect(LandlockAccess.write(abi: 3).contains(.truncate) && !LandlockAccess.write(abi: 3).contains(.ioctlDev))
        #expect(LandlockAccess.write(abi: 5).contains(.ioctlDev))
        #expect(LandlockAccess.all(abi: 7) == LandlockAccess.read(abi: 7).union(.write(abi: 7)))
        #expect(LandlockAccess.all(abi: 0).isEmpty)
        #expect(LandlockAccess([.readFile, .truncate]).description == "READ_FILE|TRUNCATE")
    }

    @Test("a restricted thread opens what its rules allow and nothing else; other threads are not affected",
          .enabled(if: abi != nil, "skipped: the host kernel has no Landlock"))
    func restrictsTheThread() throws {
        let folder = NSTemporaryDirectory() + "landlock-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder + "/inside", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try Data("a".utf8).write(to: URL(fileURLWithPath: folder + "/inside/a"))
        try Data("b".utf8).write(to: URL(fileURLWithPath: folder + "/outside"))
        try Data("c".utf8).write(to: URL(fileURLWithPath: folder + "/readonly"))
        let results = try Self.onThread { () -> [Int32] in
            do {
                let ruleset = try Landlock()
                try ruleset.allow(.read(abi: ruleset.abi).union(.write(abi: ruleset.abi)), beneath: folder + "/inside")
                // A file rule keeps only the file rights of what it is given.
                let fileRights = try ruleset.allow(.read(abi: ruleset.abi), beneath: folder + "/readonly")
                guard fileRights == [.execute, .readFile] else { return [-2] }
                guard !ruleset.isEnforcedOnCurrentThread else { return [-3] }
                try ruleset.restrictSelf()
                guard ruleset.isEnforcedOnCurrentThread else { return [-4] }
            } catch {
                return [-1]
            }
            return [Self.openError(folder + "/inside/a", O_RDWR), Self.openError(folder + "/inside/new", O_RDWR | O_CREAT),
                    Self.openError(folder + "/outside", O_RDONLY), Self.openError(folder + "/readonly", O_RDONLY),
                    Self.openError(folder + "/readonly", O_WRONLY), Self.openError("/etc/hostname", O_RDONLY)]
        }
        #expect(results == [0, 0, EACCES, 0, EACCES, EACCES])
        // This thread was never restricted.
        #expect(Self.openError(folder + "/outside", O_RDONLY) == 0)
    }

    @Test("denyAllFileAccess leaves a thread its open descriptors and nothing else",
          .enabled(if: abi != nil, "skipped: the host kernel has no Landlock"))
    func denyAll() throws {
        let open = try OwnedFileDescriptor(path: "/dev/null", flags: O_WRONLY)
        let results = try Self.onThread { () -> [Int32] in
            do { try Landlock.denyAllFileAccess() } catch { return [-1] }
            let written = (try? open.writeAll([1, 2, 3])) != nil
            return [written ? 0 : 1, Self.openError("/dev/null", O_WRONLY), Self.openError("/", O_RDONLY)]
        }
        #expect(results == [0, EACCES, EACCES])
    }

    @Test("a path that does not exist is refused naming Landlock and the path",
          .enabled(if: abi != nil, "skipped: the host kernel has no Landlock"))
    func missingPath() throws {
        let ruleset = try Landlock()
        let error = #expect(throws: LandlockError.self) { try ruleset.allow(.read(abi: ruleset.abi), beneath: "/nonexistent/landlock") }
        #expect(error?.description.hasPrefix("Landlock: cannot add a rule for /nonexistent/landlock: No such file") == true, "\(error?.description ?? "")")
    }

    @Test("the kernel's refusal is explained: no Landlock (ENOSYS) or not enabled (EOPNOTSUPP), with the kernel release")
    func unavailableMessages() {
        let missing = LandlockError.unavailable(errno: ENOSYS, kernel: "5.10.0").description
        #expect(missing.contains("Landlock is not available: the host kernel 5.10.0 has no Landlock"), "\(missing)")
        let disabled = LandlockError.unavailable(errno: EOPNOTSUPP, kernel: "6.1.0").description
        #expect(disabled.contains("not enabled") && disabled.contains("lsm="), "\(disabled)")
        #expect(!Landlock.kernelRelease().isEmpty)
    }
}
