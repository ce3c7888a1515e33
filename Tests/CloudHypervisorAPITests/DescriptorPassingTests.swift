import CLinux
import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import HostSystem
import Synchronization
import Testing
import VMM

/// Descriptors passed as SCM_RIGHTS with a request (libvirt and Kata pass TAP devices with
/// `vm.add-net` this way) reach the responder with that request, and those nobody keeps close.
@Suite("API descriptor passing")
struct DescriptorPassingTests {
    static let netBody = Array(#"{"mac":"12:34:56:78:9a:bc"}"#.utf8)

    /// Runs `body` with a server answering through `responder`.
    func withResponder(configuration: APIServer.Configuration = APIServer.Configuration(),
                       _ responder: @escaping @Sendable (APIRequest) -> APIResponse,
                       _ body: (String) throws -> Void) throws {
        let path = temporarySocketPath()
        let server = APIServer(socket: .path(path), configuration: configuration, responder: responder)
        try server.start()
        defer {
            server.stop()
            try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
        }
        try body(path)
    }

    /// A pipe whose read end does not block: (read end, write end).
    func pipe() throws -> (OwnedFileDescriptor, OwnedFileDescriptor) {
        var ends: [Int32] = [-1, -1]
        // Close-on-exec: another test running in parallel may spawn a process, which must not
        // inherit a write end and keep the pipe open (seen once in CI).
        try #require(clinux_pipe_cloexec(&ends) == 0)
        let reader = OwnedFileDescriptor(adopting: ends[0])
        try reader.setNonBlocking(true)
        return (reader, OwnedFileDescriptor(adopting: ends[1]))
    }

    /// Whether no write end of the pipe is open anywhere in the process: a read sees end of
    /// file instead of "would block". Precise even with other tests opening descriptors.
    func writersGone(_ reader: OwnedFileDescriptor) -> Bool {
        var byte: UInt8 = 0
        return withUnsafeMutableBytes(of: &byte) { (try? reader.read(into: $0)) == 0 }
    }

    @Test("two eventfds sent with vm.add-net reach the responder, twice on one keep-alive connection; a request without any sees none")
    func eventFDsReachTheResponder() throws {
        let seen = Mutex<[(uri: String, count: Int)]>([])
        let responder: @Sendable (APIRequest) -> APIResponse = { request in
            seen.withLock { $0.append((request.uri, request.fileDescriptors.count)) }
            // Signal through each descriptor received: the test reads it on its own copy.
            for (index, descriptor) in request.fileDescriptors.enumerated() {
                var value = UInt64(index + 1)
                _ = withUnsafeBytes(of: &value) { try? descriptor.write($0) }
            }
            return APIResponse(status: .noContent)
        }
        try withResponder(responder) { path in
            let client = try APIClient(socketPath: path)
            for _ in 0..<2 {
                let events = try [EventFD(), EventFD()]
                let response = try client.request("PUT", "/api/v1/vm.add-net", body: Self.netBody,
                                                  fileDescriptors: events.map(\.rawValue))
                #expect(response.status == 204)
                #expect(try events[0].read() == 1, "the first descriptor is the first eventfd, and it works")
                #expect(try events[1].read() == 2, "the second descriptor is the second eventfd")
            }
            #expect(try client.request("PUT", "/api/v1/vm.add-net", body: Self.netBody).status == 204)
            let counts = seen.withLock { $0 }
            #expect(counts.map(\.uri) == Array(repeating: "/api/v1/vm.add-net", count: 3))
            #expect(counts.map(\.count) == [2, 2, 0])
        }
    }

    @Test("pipelined requests each get their own descriptors")
    func pipelinedRequestsKeepTheirDescriptors() throws {
        let seen = Mutex<[Int]>([])
        try withResponder({ request in
            seen.withLock { $0.append(request.fileDescriptors.count) }
            return APIResponse(status: .noContent)
        }) { path in
            let client = try APIClient(socketPath: path)
            let events = try (0..<3).map { _ in try EventFD() }
            let head = "PUT /api/v1/vm.add-net HTTP/1.1\r\nContent-Length: \(Self.netBody.count)\r\n\r\n"
            let request = Array(head.utf8) + Self.netBody
            // One request without descriptors, then one with one, then one with two, all before any answer.
            try client.send(request)
            try client.send(request, fileDescriptors: [events[0].rawValue])
            try client.send(request, fileDescriptors: [events[1].rawValue, events[2].rawValue])
            let answers = try client.exchange([], expecting: 3)
            #expect(answers.map(\.status) == [204, 204, 204])
            #expect(seen.withLock { $0 } == [0, 1, 2])
        }
    }

    @Test("descriptors the responder does not keep are closed once it answered; kept ones stay open")
    func unkeptDescriptorsClose() throws {
        let kept = Mutex<[OwnedFileDescriptor]>([])
        try withResponder({ request in
            if request.uri.hasSuffix("?keep") { kept.withLock { $0 += request.fileDescriptors } }
            return APIResponse(status: .noContent)
        }) { path in
            let client = try APIClient(socketPath: path)
            let (reader, writer) = try pipe()
            #expect(try client.request("PUT", "/api/v1/vm.add-net", body: Self.netBody, fileDescriptors: [writer.rawValue]).status == 204)
            let (keptReader, keptWriter) = try pipe()
            #expect(try client.request("PUT", "/api/v1/vm.add-net?keep", body: Self.netBody,
                                       fileDescriptors: [keptWriter.rawValue]).status == 204)
            close(writer.take())
            close(keptWriter.take())
            #expect(writersGone(reader), "the server's copy was closed before the answer went out")
            #expect(!writersGone(keptReader), "the responder holds its copy")
            kept.withLock { $0 = [] }
            #expect(writersGone(keptReader))
        }
    }

    @Test("descriptors of a request the router refuses (bad body) are closed")
    func refusedByTheRouter() throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            let (reader, writer) = try pipe()
            let response = try client.request("PUT", "/api/v1/vm.add-net", body: Array("[]".utf8), fileDescriptors: [writer.rawValue])
            #expect(response.status == 400)
            close(writer.take())
            #expect(writersGone(reader))
            #expect(try client.request("GET", "/api/v1/vmm.ping").status == 200, "the connection goes on")
        }
    }

    @Test("descriptors of a malformed request are closed with it, and the connection closes")
    func malformedRequest() throws {
        try withServer { _, path throws in
            let client = try APIClient(socketPath: path)
            let (reader, writer) = try pipe()
            let answers = try client.exchange(Array("GARBAGE\r\n\r\n".utf8), expecting: 1, fileDescriptors: [writer.rawValue])
            #expect(answers.first?.status == 400)
            #expect(client.waitForClose())
            close(writer.take())
            #expect(writersGone(reader))
        }
    }

    @Test("more descriptors than the limit: 400, every one of them closed")
    func tooManyDescriptors() throws {
        var configuration = APIServer.Configuration()
        configuration.maxDescriptorsPerRequest = 2
        try withResponder(configuration: configuration, { _ in APIResponse(status: .noContent) }) { path in
            // Three at once: more than one recvmsg takes (the kernel truncates them).
            let client = try APIClient(socketPath: path)
            let (reader, writer) = try pipe()
            let head = "PUT /api/v1/vm.add-net HTTP/1.1\r\nContent-Length: \(Self.netBody.count)\r\n\r\n"
            let answers = try client.exchange(Array(head.utf8) + Self.netBody, expecting: 1,
                                              fileDescriptors: Array(repeating: writer.rawValue, count: 3))
            #expect(answers.first?.status == 400)
            #expect(answers.first.map(messages)?.last?.contains("more than 2 file descriptors") == true)
            #expect(client.waitForClose())
            // Two and two in separate messages of one request: more than the request may carry.
            let split = try APIClient(socketPath: path)
            try split.send(Array(head.utf8.prefix(10)), fileDescriptors: [writer.rawValue, writer.rawValue])
            let refused = try split.exchange(Array(head.utf8.dropFirst(10)) + Self.netBody, expecting: 1,
                                             fileDescriptors: [writer.rawValue, writer.rawValue])
            #expect(refused.first?.status == 400)
            #expect(split.waitForClose())
            close(writer.take())
            #expect(writersGone(reader))
        }
    }
}
