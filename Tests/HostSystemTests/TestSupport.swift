import CLinux
import Glibc
import HostSystem
import Synchronization
import Testing

/// The parent of every suite in this target. System-level tests run one at a time: some of
/// them check that a descriptor number is closed, which a test running beside them could
/// otherwise reuse, and the machines have two cores.
@Suite(.serialized) struct HostSystemTests {}

/// A value shared between a test and the threads it starts.
final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    var value: Value { storage.withLock { $0 } }
    /// Changes the value and returns the result.
    @discardableResult
    func update(_ change: (inout Value) -> Void) -> Value {
        storage.withLock { value in
            change(&value)
            return value
        }
    }
}

/// Waits until `event` is readable, for at most `timeoutMilliseconds`, and consumes its count.
/// Returns false on timeout.
func waitFor(_ event: EventFD, timeoutMilliseconds: Int = 10_000) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while true {
        let left = deadline - ContinuousClock.now
        let leftMilliseconds = max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
        var entry = pollfd(fd: event.rawValue, events: Int16(POLLIN), revents: 0)
        let ready = poll(&entry, 1, Int32(leftMilliseconds))
        if ready > 0 {
            _ = try? event.read()
            return true
        }
        if ready == 0 || (ready < 0 && clinux_errno() != EINTR) { return false }
    }
}

/// Opens a new empty file in /tmp that disappears when its descriptor is closed.
func temporaryFile() throws -> OwnedFileDescriptor {
    let path = "/tmp/hostsystem-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let file = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
    unlink(path)
    return file
}

/// A pipe as (read end, write end), both close-on-exec.
func makePipe() throws -> (OwnedFileDescriptor, OwnedFileDescriptor) {
    var ends: [Int32] = [-1, -1]
    // pipe2 sets close-on-exec atomically: no process spawned meanwhile inherits an end.
    if clinux_pipe_cloexec(&ends) != 0 { throw SystemError.current("pipe2") }
    return (OwnedFileDescriptor(adopting: ends[0]), OwnedFileDescriptor(adopting: ends[1]))
}

/// The calling thread's name as the kernel has it (`/proc/thread-self/comm`).
func currentThreadName() -> String? {
    guard let file = try? OwnedFileDescriptor(path: "/proc/self/task/\(clinux_gettid())/comm", flags: O_RDONLY) else {
        return nil
    }
    var buffer = [UInt8](repeating: 0, count: 64)
    guard let count = try? buffer.withUnsafeMutableBytes({ (bytes) throws(SystemError) in try file.read(into: bytes) }) else {
        return nil
    }
    var text = String(decoding: buffer[0..<count], as: UTF8.self)
    if text.hasSuffix("\n") { text.removeLast() }
    return text
}
