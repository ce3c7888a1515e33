import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import HostSystem
import Testing
import Synchronization
import VMM

/// A bound (optionally listening) AF_UNIX stream socket at `path`, as a parent process would pass it.
func boundSocket(at path: String, listening: Bool) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    try #require(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    try #require(result == 0)
    if listening { try #require(listen(fd, 16) == 0) }
    return fd
}

@Suite("API server")
struct ServerTests {
    @Test("--api-socket values", arguments: [
        ("path=/run/ch.sock", APISocketConfig.path("/run/ch.sock")),
        ("/run/ch.sock", .path("/run/ch.sock")),
        ("fd=3", .fileDescriptor(3)),
        ("fd=0", .fileDescriptor(0)),
        // Cloud Hypervisor's option parser: a repeated key takes its last value.
        ("path=/a,path=/b", .path("/b")),
    ])
    func parse(text: String, expected: APISocketConfig) throws {
        #expect(try APISocketConfig.parse(text) == expected)
    }

    @Test("bad --api-socket values name the option", arguments: ["", "path=", "fd=-1", "fd=x", "fd=3,path=/a", "mode=1"])
    func parseErrors(text: String) {
        #expect {
            try APISocketConfig.parse(text)
        } throws: { error in
            (error as? ConfigError)?.option == "--api-socket"
        }
    }

    @Test("a stale socket file is replaced; stop removes the socket")
    func staleSocket() throws {
        let path = temporarySocketPath()
        let stale = try boundSocket(at: path, listening: false)
        close(stale)  // The file stays, nobody listens: a crashed VMM's leftover.
        #expect(FileManager.default.fileExists(atPath: path))
        let server = APIServer(socketPath: path, control: FakeVMMControl())
        try server.start()
        #expect(try send(path, "GET", "vmm.ping").status == 200)
        server.stop()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a socket another server answers on is refused, and left alone")
    func liveSocket() throws {
        try withServer { _, path throws in
            let second = APIServer(socketPath: path, control: FakeVMMControl())
            #expect(throws: APIServerError.socketInUse(path: path)) { try second.start() }
            #expect(try send(path, "GET", "vmm.ping").status == 200)
        }
    }

    @Test("Cloud Hypervisor's <socket>.lock: while another VMM holds it the path is refused even with no listener yet; the file is made beside the socket")
    func lockFile() throws {
        let path = temporarySocketPath()
        defer { try? FileManager.default.removeItem(atPath: path + ".lock") }
        do {
            let holder = try OwnedFileDescriptor(path: path + ".lock", flags: O_WRONLY | O_CREAT, mode: 0o600)
            #expect(try holder.tryLockExclusively())
            let server = APIServer(socketPath: path, control: FakeVMMControl())
            #expect(throws: APIServerError.socketInUse(path: path)) { try server.start() }
            #expect(!FileManager.default.fileExists(atPath: path), "nothing was bound")
        }
        let again = APIServer(socketPath: path, control: FakeVMMControl())
        try again.start()
        #expect(try send(path, "GET", "vmm.ping").status == 200)
        #expect(!(try OwnedFileDescriptor(path: path + ".lock", flags: O_WRONLY).tryLockExclusively()), "the running server holds the lock")
        again.stop()
    }

    @Test("a path that is a regular file, or in a missing folder, is refused with the path in the message")
    func badPaths() throws {
        let file = temporarySocketPath()
        _ = FileManager.default.createFile(atPath: file, contents: Data("keep me".utf8))
        for path in [file, "/nonexistent-folder/api.sock"] {
            let server = APIServer(socketPath: path, control: FakeVMMControl())
            #expect {
                try server.start()
            } throws: { error in
                guard case let .bindFailed(failedPath, _) = error as? APIServerError else { return false }
                return failedPath == path && "\(error)".hasPrefix("--api-socket: cannot listen on \(path)")
            }
        }
        #expect(FileManager.default.contents(atPath: file) == Data("keep me".utf8))
    }

    @Test("fd= adopts a bound socket, listening or not")
    func adopt() throws {
        for listening in [true, false] {
            let path = temporarySocketPath()
            let fd = try boundSocket(at: path, listening: listening)
            let server = APIServer(adoptingFileDescriptor: fd, control: FakeVMMControl())
            try server.start()
            #expect(try send(path, "GET", "vmm.ping").status == 200)
            server.stop()
        }
    }

    @Test("fd= refuses descriptors that are not bound AF_UNIX stream sockets, without crashing")
    func adoptBad() throws {
        let file = open("/dev/null", O_RDONLY)
        let udp = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        let inet = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let unbound = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { for fd in [file, udp, inet, unbound] { close(fd) } }
        for (fd, reason) in [(file, "not a socket"), (udp, "not a stream socket"), (inet, "not an AF_UNIX socket"),
                             (unbound, "is it bound?"), (4000, "not open")] {
            let server = APIServer(adoptingFileDescriptor: fd, control: FakeVMMControl())
            #expect {
                try server.start()
            } throws: { error in
                guard case let .badDescriptor(badFD, message) = error as? APIServerError else { return false }
                return badFD == fd && message.contains(reason)
            }
        }
    }

    @Test("start twice is refused")
    func startTwice() throws {
        try withServer { server, _ throws in
            #expect(throws: APIServerError.alreadyStarted) { try server.start() }
        }
    }

    @Test("concurrent clients: 16 threads × 50 requests on their own connections, all answered correctly")
    func concurrentClients() throws {
        let control = try fake(in: .running)
        var configuration = APIServer.Configuration()
        configuration.workerThreads = 4
        try withServer(control: control, configuration: configuration) { _, path throws in
            let failures = Mutex(0)
            DispatchQueue.concurrentPerform(iterations: 16) { thread in
                do {
                    let client = try APIClient(socketPath: path)
                    for round in 0..<50 {
                        let response = (thread + round).isMultiple(of: 2)
                            ? try client.request("GET", "/api/v1/vm.info") : try client.request("GET", "/api/v1/vmm.ping")
                        if response.status != 200 { failures.withLock { $0 += 1 } }
                    }
                    client.close()
                } catch {
                    failures.withLock { $0 += 1 }
                }
            }
            #expect(failures.withLock { $0 } == 0)
            #expect(control.snapshot.calls.count == 2 + 16 * 50)
        }
    }
}
