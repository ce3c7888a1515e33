import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct UnixSocketTests {
        /// A fresh socket path in a new private folder under $TMPDIR (or /tmp).
        static func temporaryPath() throws -> String {
            let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
            var template = Array("\(base)/hostsystem-socket-XXXXXX".utf8CString)
            let folder = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
            try #require(folder != nil)
            return String(cString: folder!) + "/test.sock"
        }

        /// A pipe: (read end non-blocking, write end).
        static func pipe() throws -> (OwnedFileDescriptor, OwnedFileDescriptor) {
            var ends: [Int32] = [-1, -1]
            // Close-on-exec: a process another test spawns meanwhile must not keep a write end open.
            try #require(clinux_pipe_cloexec(&ends) == 0)
            let reader = OwnedFileDescriptor(adopting: ends[0])
            try reader.setNonBlocking(true)
            return (reader, OwnedFileDescriptor(adopting: ends[1]))
        }

        /// Whether every write end of the pipe is closed: a read then sees end of file rather
        /// than "would block".
        static func writersGone(_ reader: OwnedFileDescriptor) -> Bool {
            var byte: UInt8 = 0
            return withUnsafeMutableBytes(of: &byte) { (try? reader.read(into: $0)) == 0 }
        }

        @Test func threeEventFDsTravelWithTheirBytesAndStillWork() throws {
            let (left, right) = try UnixSocket.pair()
            let events = try (0..<3).map { _ in try EventFD() }
            #expect(try left.send(Array("PUT /x".utf8), descriptors: events.map(\.rawValue)) == 6)
            let message = try #require(try right.receive())
            #expect(message.bytes == Array("PUT /x".utf8))
            #expect(message.descriptors.count == 3)
            for (index, received) in message.descriptors.enumerated() {
                #expect(!events.map(\.rawValue).contains(received.rawValue), "a new descriptor, not the sender's number")
                #expect(clinux_fcntl_val(received.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0, "MSG_CMSG_CLOEXEC")
                // The received descriptor is the same eventfd: a signal through it reaches the original.
                var value = UInt64(index + 10)
                let written = try withUnsafeBytes(of: &value) { try received.write($0) }
                #expect(written == 8)
                #expect(try events[index].read() == UInt64(index + 10))
            }
            // Nothing more is waiting on a socket whose peer is open: a blocking socket made non-blocking says so.
            try right.descriptor.setNonBlocking(true)
            #expect(try right.receive() == nil)
        }

        @Test func descriptorsWithoutBytesAndEndOfStream() throws {
            let (left, right) = try UnixSocket.pair()
            let event = try EventFD()
            #expect(try left.send([], descriptors: [event.rawValue]) == 0)
            let message = try #require(try right.receive())
            #expect(message.descriptors.count == 1)
            #expect(message.bytes == [0], "Linux needs one byte to carry descriptors on a stream")
            try left.shutdown(.writing)
            #expect(try right.receive()?.isEndOfStream == true)
        }

        @Test func moreDescriptorsThanRoomIsAnErrorAndClosesThoseThatArrived() throws {
            let (left, right) = try UnixSocket.pair()
            let (reader, writer) = try Self.pipe()
            #expect(try left.send([1, 2, 3], descriptors: Array(repeating: writer.rawValue, count: 5)) == 3)
            close(writer.take())
            #expect(!Self.writersGone(reader), "the copies in flight keep the pipe open")
            #expect {
                _ = try right.receive(maxDescriptors: 2)
            } throws: { error in
                guard let error = error as? SystemError else { return false }
                return error.errno == EMSGSIZE && error.call.contains("MSG_CTRUNC") && error.call.hasPrefix("recvmsg")
            }
            #expect(Self.writersGone(reader), "every received copy of the write end was closed")
        }

        @Test func listenAcceptConnectAtAPath() throws {
            let path = try Self.temporaryPath()
            defer { unlink(path); rmdir(String(path.dropLast("/test.sock".count))) }
            #expect(!UnixSocket.hasListener(at: path))
            let listener = try UnixSocket.listening(at: path)
            #expect(try listener.accept() == nil, "nothing pending")
            #expect(UnixSocket.hasListener(at: path))
            _ = try listener.accept()  // The probe's connection.
            let client = try UnixSocket.connect(to: path)
            #expect(try listener.wait(for: .readable, timeoutMilliseconds: 5000))
            let server = try #require(try listener.accept())
            #expect(clinux_fcntl_val(server.rawValue, F_GETFL, 0) & O_NONBLOCK != 0)
            #expect(clinux_fcntl_val(server.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0)
            let event = try EventFD()
            try client.sendAll(Array("hello".utf8), descriptors: [event.rawValue, event.rawValue])
            #expect(try server.wait(for: .readable, timeoutMilliseconds: 5000))
            let message = try #require(try server.receive())
            #expect(message.bytes == Array("hello".utf8))
            #expect(message.descriptors.count == 2)
            #expect(try server.send(Array("back".utf8)) == 4)
            #expect(try client.receive()?.bytes == Array("back".utf8))

            // A second listener at the same path: refused while this one answers.
            #expect {
                _ = try UnixSocket.listening(at: path)
            } throws: { error in
                (error as? SystemError)?.errno == EADDRINUSE
            }
        }

        @Test func aStaleSocketFileIsReplacedAndOtherFilesAreNot() throws {
            let path = try Self.temporaryPath()
            defer { unlink(path); rmdir(String(path.dropLast("/test.sock".count))) }
            do { _ = try UnixSocket.listening(at: path) }  // Closed at once: its file stays, stale.
            var status = stat()
            #expect(stat(path, &status) == 0)
            #expect(!UnixSocket.hasListener(at: path))
            let listener = try UnixSocket.listening(at: path)
            #expect(UnixSocket.hasListener(at: path))
            _ = listener
            unlink(path)
            let file = try OwnedFileDescriptor(path: path, flags: O_CREAT | O_WRONLY)
            _ = file
            #expect {
                _ = try UnixSocket.listening(at: path)
            } throws: { error in
                (error as? SystemError)?.call == "bind(\(path))" && (error as? SystemError)?.errno == EADDRINUSE
            }
            #expect(stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG, "the regular file is left alone")
        }

        @Test func adoptingAnInheritedListener() throws {
            let path = try Self.temporaryPath()
            defer { unlink(path); rmdir(String(path.dropLast("/test.sock".count))) }
            // A bound, not yet listening socket, as a parent process would pass it.
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: Array(path.utf8))
                raw[path.utf8.count] = 0
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            try #require(bound == 0)
            let listener = try UnixSocket.adoptingListener(fd)
            #expect(listener.rawValue == fd)
            #expect(clinux_fcntl_val(fd, F_GETFL, 0) & O_NONBLOCK != 0)
            #expect(clinux_fcntl_val(fd, F_GETFD, 0) & FD_CLOEXEC != 0)
            let client = try UnixSocket.connect(to: path)
            _ = client
            #expect(try listener.wait(for: .readable, timeoutMilliseconds: 5000))
            #expect(try listener.accept() != nil)
        }

        @Test func adoptingRefusesWhatIsNotABoundUnixStreamSocket() throws {
            let file = clinux_open("/dev/null", O_RDONLY)
            let datagram = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            let inet = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let unbound = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { for fd in [file, datagram, inet, unbound] { close(fd) } }
            let cases: [(Int32, String)] = [(file, "it is not a socket"), (datagram, "it is not a stream socket"),
                                            (inet, "it is not an AF_UNIX socket"), (unbound, "is it bound?"),
                                            (4000, "it is not open")]
            for (fd, clause) in cases {
                #expect {
                    _ = try UnixSocket.adoptingListener(fd)
                } throws: { error in
                    "\(error)".contains(clause)
                }
                if fd != 4000 { #expect(clinux_fcntl_val(fd, F_GETFD, 0) >= 0, "fd \(fd) stays open") }
            }
        }
    }
}
