import Testing
@testable import VirtioDevices

@Suite("virtio-vsock packet header")
struct VsockPacketTests {
    /// A REQUEST from guest 3:1234 to host 2:5000, written out byte by byte.
    static let requestBytes: [UInt8] = [
        0x03, 0, 0, 0, 0, 0, 0, 0,          // src_cid 3
        0x02, 0, 0, 0, 0, 0, 0, 0,          // dst_cid 2
        0xd2, 0x04, 0, 0,                   // src_port 1234
        0x88, 0x13, 0, 0,                   // dst_port 5000
        0, 0, 0, 0,                         // len 0
        0x01, 0,                            // type stream
        0x01, 0,                            // op REQUEST
        0, 0, 0, 0,                         // flags
        0x00, 0x00, 0x04, 0x00,             // buf_alloc 262144
        0x78, 0x56, 0x34, 0x12,             // fwd_cnt 0x12345678
    ]

    @Test("decodes the 44 little-endian bytes field by field")
    func decodes() throws {
        let header = try #require(VsockHeader(decoding: Self.requestBytes))
        #expect(header.sourceCID == 3)
        #expect(header.destinationCID == 2)
        #expect(header.sourcePort == 1234)
        #expect(header.destinationPort == 5000)
        #expect(header.length == 0)
        #expect(header.type == 1)
        #expect(header.operation == .request)
        #expect(header.flags == 0)
        #expect(header.bufferAllocation == 262_144)
        #expect(header.forwardCount == 0x1234_5678)
    }

    @Test("encodes to the same bytes, and round-trips every field")
    func encodes() {
        let header = VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 1234, destinationPort: 5000, op: .request,
                                 bufferAllocation: 262_144, forwardCount: 0x1234_5678)
        #expect(header.encoded == Self.requestBytes)
        let odd = VsockHeader(sourceCID: 0x0102_0304_0506_0708, destinationCID: .max, sourcePort: .max, destinationPort: 7,
                              length: 0xdead_beef, type: 0x0201, op: .shutdown, flags: 3, bufferAllocation: 9, forwardCount: .max)
        #expect(odd.encoded.count == 44)
        #expect(Array(odd.encoded[0..<8]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(Array(odd.encoded[24..<28]) == [0xef, 0xbe, 0xad, 0xde])
        #expect(Array(odd.encoded[28..<32]) == [0x01, 0x02, 4, 0])
        #expect(VsockHeader(decoding: odd.encoded) == odd)
    }

    @Test("a short buffer is not a header; unknown operations are kept raw")
    func shortAndUnknown() throws {
        #expect(VsockHeader(decoding: Self.requestBytes.prefix(43)) == nil)
        var bytes = Self.requestBytes
        bytes[30] = 0x2a
        let header = try #require(VsockHeader(decoding: bytes + [0xff, 0xff]))
        #expect(header.op == 42)
        #expect(header.operation == nil)
    }

    @Test("operation numbers and protocol constants are the virtio spec's")
    func constants() {
        #expect(VsockOp.allCases.map(\.rawValue) == [1, 2, 3, 4, 5, 6, 7])
        #expect(Vsock.headerSize == 44 && Vsock.hostCID == 2 && Vsock.streamType == 1)
        #expect(Vsock.shutdownReceive == 1 && Vsock.shutdownSend == 2)
    }

    @Test("the CONNECT line is parsed as Cloud Hypervisor parses it")
    func connectCommand() {
        func parse(_ text: String) -> VsockMuxer.ConnectCommand { VsockMuxer.parseConnectCommand(Array(text.utf8)) }
        #expect(parse("CONNECT 1234\n") == .port(1234))
        #expect(parse("connect 5\n") == .port(5))
        #expect(parse("CoNnEcT  77 \r\n") == .port(77))
        #expect(parse("CONNECT 4294967295\n") == .port(.max))
        #expect(parse("CONN") == .incomplete)
        #expect(parse("CONNECT 12") == .incomplete)
        #expect(parse("CON\n") == .invalid)
        #expect(parse("HELLO 1234\n") == .invalid)
        #expect(parse("CONNECT x\n") == .invalid)
        #expect(parse("CONNECT 4294967296\n") == .invalid)
        #expect(parse("CONNECT -1\n") == .invalid)
        #expect(parse("CONNECT " + String(repeating: "1", count: 24)) == .invalid)
    }
}
