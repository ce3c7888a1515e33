// An incremental HTTP/1.1 request parser: bytes in as they arrive, complete requests out.
// Pure (no I/O), so the server's connection state machine and the tests drive it alike.

/// Bytes received on a connection and not yet parsed, with their position in the stream.
struct InputBuffer {
    /// Received bytes; those before `start` are consumed.
    private(set) var bytes: [UInt8] = []
    /// The first unconsumed byte.
    private(set) var start = 0
    /// How many bytes the stream carried before `bytes[0]`.
    private(set) var base: UInt64 = 0

    /// The unconsumed bytes.
    var available: ArraySlice<UInt8> { bytes[start...] }
    /// How many bytes are unconsumed.
    var count: Int { bytes.count - start }
    /// The stream offset of the first unconsumed byte.
    var consumedOffset: UInt64 { base + UInt64(start) }
    /// The stream offset just after the last byte received.
    var receivedOffset: UInt64 { base + UInt64(bytes.count) }

    /// Appends received bytes.
    mutating func append(_ more: [UInt8]) {
        if start > 0, start >= bytes.count / 2 {
            base += UInt64(start)
            bytes.removeFirst(start)
            start = 0
        }
        bytes.append(contentsOf: more)
    }

    /// Marks `n` bytes consumed.
    mutating func consume(_ n: Int) {
        precondition(n <= count, "consuming more than is buffered")
        start += n
    }

    /// Forgets everything buffered (after a refusal).
    mutating func discardAll() {
        base += UInt64(bytes.count)
        bytes = []
        start = 0
    }
}

/// A request line and the headers the server acts on.
struct HTTPRequestHead: Sendable, Equatable {
    /// The method.
    var method: HTTPMethod
    /// The request target as sent (`/api/v1/vm.info?x=1`).
    var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    var minorVersion: Int
    /// Every header line, in order, names as sent.
    var headers: [(name: String, value: String)]
    /// The `Content-Length`, if given.
    var contentLength: Int?
    /// Whether the body is sent with `Transfer-Encoding: chunked`.
    var chunked = false
    /// Whether the connection stays open after the answer (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    var keepAlive = true
    /// Whether the client waits for `100 Continue` before sending the body.
    var expectsContinue = false

    static func == (lhs: HTTPRequestHead, rhs: HTTPRequestHead) -> Bool {
        lhs.method == rhs.method && lhs.target == rhs.target && lhs.minorVersion == rhs.minorVersion
            && lhs.headers.elementsEqual(rhs.headers) { $0.name == $1.name && $0.value == $1.value }
            && lhs.contentLength == rhs.contentLength && lhs.chunked == rhs.chunked && lhs.keepAlive == rhs.keepAlive
            && lhs.expectsContinue == rhs.expectsContinue
    }

    /// The first value of header `name`, compared case-insensitively.
    func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }
}

/// Turns a connection's bytes into requests, one at a time, in order.
///
/// It accepts what Cloud Hypervisor's clients send (curl, Go's net/http, ch-remote) and
/// refuses with ``APIError/malformedRequest(_:)`` anything it cannot frame safely: unknown
/// methods and versions, header lines without a colon or with folding, a bad or conflicting
/// `Content-Length`, a `Transfer-Encoding` other than chunked (or together with a length),
/// a malformed chunk. Bodies over the limit are ``APIError/bodyTooLarge(limit:)``.
struct HTTPRequestParser {
    /// What one step produced.
    enum Event: Equatable {
        /// A head was parsed and its body is still to come.
        case head(expectsContinue: Bool)
        /// A complete request; `end` is the stream offset just after its last byte.
        case request(HTTPRequestHead, body: [UInt8], end: UInt64)
    }

    private enum Stage {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
    }

    /// The most bytes a request line plus headers (or a chunked body's trailers) may take.
    static let maxHeadBytes = 65536
    /// The most header lines one request may have.
    static let maxHeaderLines = 128
    /// The longest chunk-size line.
    static let maxChunkLine = 1024

    /// The largest body accepted.
    let maxBodySize: Int
    private var stage = Stage.head
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// How far the current line search has looked (relative to the unconsumed bytes).
    private var scanned = 0

    init(maxBodySize: Int) {
        self.maxBodySize = maxBodySize
    }

    /// Whether no request is partly parsed.
    var isIdle: Bool {
        if case .head = stage { return scanned == 0 && head == nil }
        return false
    }

    /// Forgets the request in progress.
    mutating func reset() {
        stage = .head
        head = nil
        body = []
        scanned = 0
    }

    /// Parses what `input` holds, consuming it, until an event or the end of the bytes.
    mutating func next(_ input: inout InputBuffer) throws(APIError) -> Event? {
        while true {
            switch stage {
            case .head:
                skipLeadingEmptyLines(&input)
                guard let length = try findHeadEnd(input.available) else { return nil }
                let parsed = try Self.parseHead(input.available.prefix(length))
                input.consume(length)
                scanned = 0
                if let contentLength = parsed.contentLength, contentLength > maxBodySize {
                    throw .bodyTooLarge(limit: maxBodySize)
                }
                head = parsed
                body = []
                if parsed.chunked {
                    stage = .chunkSize
                } else if let contentLength = parsed.contentLength, contentLength > 0 {
                    body.reserveCapacity(contentLength)
                    stage = .fixedBody(remaining: contentLength)
                } else {
                    return finish(input)
                }
                return .head(expectsContinue: parsed.expectsContinue)
            case let .fixedBody(remaining):
                let taken = min(remaining, input.count)
                body.append(contentsOf: input.available.prefix(taken))
                input.consume(taken)
                if taken < remaining {
                    stage = .fixedBody(remaining: remaining - taken)
                    return nil
                }
                return finish(input)
            case .chunkSize:
                guard let line = try takeLine(&input, limit: Self.maxChunkLine, what: "chunk size line") else { return nil }
                let size = try Self.chunkSize(line)
                if size == 0 {
                    stage = .trailers
                } else {
                    guard size <= maxBodySize - body.count else { throw .bodyTooLarge(limit: maxBodySize) }
                    stage = .chunkData(remaining: size)
                }
            case let .chunkData(remaining):
                let taken = min(remaining, input.count)
                body.append(contentsOf: input.available.prefix(taken))
                input.consume(taken)
                if taken < remaining {
                    stage = .chunkData(remaining: remaining - taken)
                    return nil
                }
                stage = .chunkDataEnd
            case .chunkDataEnd:
                guard let line = try takeLine(&input, limit: 2, what: "chunk end") else { return nil }
                guard line.isEmpty else { throw .malformedRequest("chunk data is not followed by CRLF") }
                stage = .chunkSize
            case .trailers:
                guard let line = try takeLine(&input, limit: Self.maxHeadBytes, what: "trailer line") else { return nil }
                if line.isEmpty { return finish(input) }
            }
        }
    }

    /// The complete request, and back to waiting for a head.
    private mutating func finish(_ input: InputBuffer) -> Event {
        let request = head!
        let done = body
        reset()
        return .request(request, body: done, end: input.consumedOffset)
    }

    /// Drops CR/LF bytes before a request line (RFC 9112 section 2.2 lets a server ignore them;
    /// some clients send a CRLF after a body).
    private mutating func skipLeadingEmptyLines(_ input: inout InputBuffer) {
        guard scanned == 0 else { return }
        var skip = 0
        for byte in input.available {
            guard byte == 13 || byte == 10 else { break }
            skip += 1
        }
        input.consume(skip)
    }

    /// The length of the head (up to and including its empty line), or nil while incomplete.
    private mutating func findHeadEnd(_ bytes: ArraySlice<UInt8>) throws(APIError) -> Int? {
        let first = bytes.startIndex
        var index = first + max(0, scanned - 2)
        while index < bytes.endIndex {
            if bytes[index] == 10 {
                // An empty line: LF right after LF, or after CR LF.
                let previous = index - first >= 1 ? bytes[index - 1] : 0
                let beforeThat = index - first >= 2 ? bytes[index - 2] : 0
                if previous == 10 || (previous == 13 && beforeThat == 10) { return index - first + 1 }
            }
            index += 1
            if index - first > Self.maxHeadBytes {
                throw .malformedRequest("the request line and headers are longer than \(Self.maxHeadBytes) bytes")
            }
        }
        scanned = bytes.count
        return nil
    }

    /// One line (without its CR LF) from the front of `input`, or nil while incomplete.
    private mutating func takeLine(_ input: inout InputBuffer, limit: Int, what: String) throws(APIError) -> [UInt8]? {
        let bytes = input.available
        guard let lineFeed = bytes.firstIndex(of: 10) else {
            if bytes.count > limit { throw .malformedRequest("the \(what) is longer than \(limit) bytes") }
            return nil
        }
        var line = Array(bytes[bytes.startIndex..<lineFeed])
        if line.last == 13 { line.removeLast() }
        if line.count > limit { throw .malformedRequest("the \(what) is longer than \(limit) bytes") }
        input.consume(lineFeed - bytes.startIndex + 1)
        return line
    }

    /// A chunk-size line's size (hexadecimal, extensions after `;` ignored).
    private static func chunkSize(_ line: [UInt8]) throws(APIError) -> Int {
        let digits = line.prefix { $0 != UInt8(ascii: ";") }.filter { $0 != 32 && $0 != 9 }
        let text = String(decoding: digits, as: UTF8.self)
        guard !digits.isEmpty, digits.count <= 15, let size = Int(text, radix: 16) else {
            throw .malformedRequest("'\(String(decoding: line.prefix(40), as: UTF8.self))' is not a chunk size")
        }
        return size
    }

    /// The characters a method or header name may use (RFC 9110 `tchar`).
    private static func isToken(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                true
            default:
                Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
            }
        }
    }

    /// Parses a request line and its headers (the bytes up to and including the empty line).
    static func parseHead(_ bytes: ArraySlice<UInt8>) throws(APIError) -> HTTPRequestHead {
        var lines = bytes.split(separator: 10, omittingEmptySubsequences: false).map { line -> Substring in
            let trimmed = line.last == 13 ? line.dropLast() : line
            return Substring(String(decoding: trimmed, as: UTF8.self))
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let requestLine = lines.first else { throw .malformedRequest("no request line") }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty else {
            throw .malformedRequest("'\(requestLine.prefix(80))' is not a request line (METHOD target HTTP/1.1)")
        }
        guard isToken(parts[0]) else { throw .malformedRequest("'\(parts[0].prefix(40))' is not a method") }
        guard let method = HTTPMethod(rawValue: String(parts[0])) else {
            throw .malformedRequest("unknown method \(parts[0].prefix(40))")
        }
        guard parts[1].utf8.allSatisfy({ $0 > 32 && $0 != 127 }) else {
            throw .malformedRequest("the request target contains control characters")
        }
        let minorVersion: Int
        switch parts[2] {
        case "HTTP/1.1": minorVersion = 1
        case "HTTP/1.0": minorVersion = 0
        default: throw .malformedRequest("version '\(parts[2].prefix(20))' is not supported (HTTP/1.1 or HTTP/1.0)")
        }
        guard lines.count - 1 <= maxHeaderLines else { throw .malformedRequest("more than \(maxHeaderLines) header lines") }

        var head = HTTPRequestHead(method: method, target: String(parts[1]), minorVersion: minorVersion, headers: [])
        var connectionTokens: [String] = []
        var transferEncoding: String?
        for line in lines.dropFirst() {
            if line.first == " " || line.first == "\t" { throw .malformedRequest("folded header lines are not accepted") }
            guard let colon = line.firstIndex(of: ":") else {
                throw .malformedRequest("header line '\(line.prefix(40))' has no colon")
            }
            let name = line[..<colon]
            guard isToken(name) else { throw .malformedRequest("'\(name.prefix(40))' is not a header name") }
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            head.headers.append((String(name), String(value)))
            switch name.lowercased() {
            case "content-length":
                guard !value.isEmpty, value.count <= 18, value.utf8.allSatisfy({ (48...57).contains($0) }), let length = Int(value) else {
                    throw .malformedRequest("Content-Length '\(value.prefix(40))' is not a number of bytes")
                }
                if let earlier = head.contentLength, earlier != length {
                    throw .malformedRequest("two different Content-Length values")
                }
                head.contentLength = length
            case "transfer-encoding":
                guard transferEncoding == nil else { throw .malformedRequest("more than one Transfer-Encoding header") }
                transferEncoding = value.lowercased()
            case "connection":
                connectionTokens += value.split(separator: ",").map { $0.trimmingWhitespace().lowercased() }
            case "expect":
                head.expectsContinue = value.lowercased() == "100-continue"
            default:
                break
            }
        }
        switch transferEncoding {
        case nil, "identity":
            break
        case "chunked":
            guard head.contentLength == nil else {
                throw .malformedRequest("both Transfer-Encoding and Content-Length are given")
            }
            head.chunked = true
        case let other?:
            throw .malformedRequest("Transfer-Encoding '\(other.prefix(40))' is not supported (only chunked)")
        }
        head.keepAlive = minorVersion == 1
            ? !connectionTokens.contains("close") : connectionTokens.contains("keep-alive") && !connectionTokens.contains("close")
        if minorVersion == 0 { head.expectsContinue = false }
        return head
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    fileprivate func trimmingWhitespace() -> Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isBlank($0) }) else { return self[endIndex...] }
        let last = lastIndex(where: { !isBlank($0) })!
        return self[first...last]
    }
}
