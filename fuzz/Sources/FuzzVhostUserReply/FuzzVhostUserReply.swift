// fuzz-vhost-user-reply: a hostile vhost-user back-end's replies. The first byte picks the
// front-end call (each GET_ request, and acknowledged SET_ requests after REPLY_ACK); the rest
// is what the back-end sends. The front-end must return a value or a VhostUserError with a
// sentence, never crash; a value it returns must be the one the bytes carried.
import FuzzSupport
import VhostUser

@main
enum VhostUserReplyFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// A reply message: header (version 1, reply flag) and payload.
private func reply(_ request: UInt32, _ payload: [UInt8], flags: UInt32 = 0x5) -> [UInt8] {
    VhostUserHeader(request: VhostUserRequest(rawValue: request), flags: flags, size: UInt32(payload.count)).bytes + payload
}

/// The little-endian integer in `bytes`.
private func littleEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    bytes.reversed().reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let path = input.integer(UInt8.self) % 8
        let stream = input.bytes(count: input.remainingCount)
        // Paths 4-7 first switch REPLY_ACK on (SET_PROTOCOL_FEATURES itself is not
        // acknowledged), so the stream answers an acknowledged SET_ request.
        let frontend = VhostUserFrontend(channel: ReplayVhostUserChannel(replies: stream))
        do throws(VhostUserError) {
            if path >= 4 {
                try frontend.setProtocolFeatures([.replyAck])
                fuzzCheck(frontend.acknowledgesRequests, "REPLY_ACK was negotiated but requests are not acknowledged")
            }
            switch path {
            case 0:
                let value = try frontend.getFeatures()
                fuzzCheck(stream.count >= 20 && value == littleEndian(stream[12..<20]), "a features reply was accepted with another value than it carried")
            case 1:
                _ = try frontend.getQueueNum()
                fuzzCheck(stream.count >= 20, "a short GET_QUEUE_NUM reply was accepted")
            case 2:
                let base = try frontend.getVringBase(index: 1)
                fuzzCheck(stream.count >= 20 && littleEndian(stream[12..<16]) == 1 && littleEndian(stream[16..<20]) == UInt64(base),
                          "a vring state for another queue, or another base, was accepted")
            case 3:
                let bytes = try frontend.getConfig(offset: 0, size: 40)
                fuzzCheck(bytes.count == 40, "a GET_CONFIG reply of the wrong size was accepted")
            case 4:
                try frontend.setVringNum(index: 0, size: 256)
            case 5:
                try frontend.setMemTable([VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 0)], descriptors: [-1])
            case 6:
                try frontend.setVringKick(index: 0, descriptor: nil)
            default:
                _ = try frontend.getProtocolFeatures()
            }
        } catch {
            fuzzCheck(!error.description.isEmpty, "a refusal without a reason")
        }
    }
}

/// Well-formed replies for each path, and a few broken ones.
private func seeds() -> [[UInt8]] {
    [
        [0] + reply(1, VhostUserPayload.u64(0x1_7000_0000)),
        [1] + reply(17, VhostUserPayload.u64(2)),
        [2] + reply(11, VhostUserPayload.vringState(index: 1, value: 7)),
        [3] + reply(24, [0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0x61, count: 40)),
        [4] + reply(8, VhostUserPayload.u64(0)),
        [5] + reply(5, VhostUserPayload.u64(1)),
        [6] + reply(12, VhostUserPayload.u64(0)),
        [7] + reply(15, VhostUserPayload.u64(0x8009)),
        [0] + reply(1, [1, 2, 3]),
        [2] + reply(11, VhostUserPayload.vringState(index: 0, value: 7)),
        [0] + reply(1, VhostUserPayload.u64(1), flags: 0x1),
        [3] + reply(24, [0, 0, 0, 0, 255, 255, 255, 255]),
    ]
}
