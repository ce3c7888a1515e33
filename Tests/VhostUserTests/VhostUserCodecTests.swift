import HostSystem
import Testing
import VhostUser

/// A reply message as a back-end sends it: header (version 1 + reply flag) and payload.
func replyBytes(_ request: UInt32, _ payload: [UInt8], flags: UInt32 = 0x5, size: UInt32? = nil) -> [UInt8] {
    var out: [UInt8] = []
    for value in [request, flags, size ?? UInt32(payload.count)] {
        out += [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)]
    }
    return out + payload
}

@Suite("vhost-user codec")
struct VhostUserCodecTests {
    @Test func requestMessagesHaveTheSpecificationsLayout() {
        // SET_VRING_ADDR for queue 1: header (9, version 1, 40 bytes), index, flags, desc, used, avail, log.
        let address = VhostUserVringAddress(index: 1, descriptorTable: 0x1122_3344_5566_7788, usedRing: 0x10, availableRing: 0x20)
        let message = VhostUserPayload.message(.setVringAddr, payload: VhostUserPayload.vringAddress(address))
        #expect(message == [9, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0,
                            1, 0, 0, 0, 0, 0, 0, 0,
                            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
                            0x10, 0, 0, 0, 0, 0, 0, 0,
                            0x20, 0, 0, 0, 0, 0, 0, 0,
                            0, 0, 0, 0, 0, 0, 0, 0])
        // SET_MEM_TABLE with one region: count, padding, gpa, size, user address, mmap offset.
        let table = VhostUserPayload.memoryTable([VhostUserMemoryRegion(guestPhysicalAddress: 0x1000, size: 0x2000, userAddress: 0x7f00_0000_0000, mmapOffset: 0)])
        #expect(table.count == 8 + 32)
        #expect(Array(table[0..<8]) == [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(table[8..<16]) == [0, 0x10, 0, 0, 0, 0, 0, 0])
        #expect(Array(table[24..<32]) == [0, 0, 0, 0, 0, 0x7f, 0, 0])
        // SET_VRING_KICK without a descriptor sets bit 8; with one, only the index.
        #expect(VhostUserPayload.vringDescriptor(index: 2, hasDescriptor: false) == [2, 1, 0, 0, 0, 0, 0, 0])
        #expect(VhostUserPayload.vringDescriptor(index: 2, hasDescriptor: true) == [2, 0, 0, 0, 0, 0, 0, 0])
        // Acknowledged requests carry NEED_REPLY next to the version.
        #expect(Array(VhostUserPayload.message(.setOwner, flags: VhostUserFlags.needReply)[4..<8]) == [9, 0, 0, 0])
    }

    @Test func wellFormedRepliesDecode() throws {
        #expect(try VhostUserReply.decode(replyBytes(1, [1, 0, 0, 0x40, 1, 0, 0, 0]), for: .getFeatures, expecting: .u64)
                == .u64(0x1_4000_0001))
        #expect(try VhostUserReply.decode(replyBytes(11, [3, 0, 0, 0, 0x34, 0x12, 0, 0]), for: .getVringBase,
                                          expecting: .vringState(index: 3)) == .vringState(index: 3, value: 0x1234))
        let config = try VhostUserReply.decode(replyBytes(24, [4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb]), for: .getConfig,
                                               expecting: .config(offset: 4, size: 2))
        #expect(config == .config(offset: 4, flags: 0, bytes: [0xaa, 0xbb]))
    }

    @Test(arguments: [
        // (bytes, expected error)
        (Array([1, 0, 0]), VhostUserError.shortHeader(count: 3)),
        (replyBytes(1, [0, 0, 0, 0, 0, 0, 0, 0], flags: 0x6), .badVersion(flags: 0x6)),
        (replyBytes(1, [0, 0, 0, 0, 0, 0, 0, 0], flags: 0x1), .notAReply(request: .getFeatures, flags: 0x1)),
        (replyBytes(2, [0, 0, 0, 0, 0, 0, 0, 0]), .unexpectedRequest(expected: .getFeatures, got: .setFeatures)),
        (replyBytes(1, [], size: 0xffff_ffff), .payloadTooLarge(request: .getFeatures, size: 0xffff_ffff)),
        (replyBytes(1, [0, 0, 0, 0]), .wrongPayloadSize(request: .getFeatures, expected: 8, got: 4)),
        (replyBytes(1, [0, 0, 0, 0], size: 8), .payloadLengthMismatch(request: .getFeatures, announced: 8, actual: 4)),
    ])
    func malformedRepliesAreRefusedWithAReason(bytes: [UInt8], expected: VhostUserError) {
        #expect(throws: expected) { try VhostUserReply.decode(bytes, for: .getFeatures, expecting: .u64) }
        #expect(!expected.description.isEmpty)
    }

    @Test func vringAndConfigRepliesMustMatchTheQuestion() {
        #expect(throws: VhostUserError.wrongQueue(request: .getVringBase, expected: 1, got: 0)) {
            try VhostUserReply.decode(replyBytes(11, [0, 0, 0, 0, 5, 0, 0, 0]), for: .getVringBase, expecting: .vringState(index: 1))
        }
        #expect(throws: VhostUserError.wrongConfigRange(expectedOffset: 0, expectedSize: 4, offset: 0, size: 0xffff_ffff)) {
            try VhostUserReply.decode(replyBytes(24, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), for: .getConfig,
                                      expecting: .config(offset: 0, size: 4))
        }
        #expect(throws: VhostUserError.wrongPayloadSize(request: .getConfig, expected: 16, got: 14)) {
            try VhostUserReply.decode(replyBytes(24, [0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1, 2]), for: .getConfig,
                                      expecting: .config(offset: 0, size: 4))
        }
    }

    /// Every prefix and every single-byte change of a good reply decodes or is refused; none traps.
    @Test func everyPrefixAndByteFlipIsHandled() {
        let good = replyBytes(11, [1, 0, 0, 0, 9, 0, 0, 0])
        for length in 0...good.count {
            _ = try? VhostUserReply.decode(Array(good.prefix(length)), for: .getVringBase, expecting: .vringState(index: 1))
        }
        for index in good.indices {
            for value: UInt8 in [0, 1, 0x7f, 0xff] {
                var changed = good
                changed[index] = value
                do {
                    let reply = try VhostUserReply.decode(changed, for: .getVringBase, expecting: .vringState(index: 1))
                    guard case let .vringState(queue, _) = reply else { Issue.record("not a vring state"); continue }
                    #expect(queue == 1)
                } catch {
                    #expect(!error.description.isEmpty)
                }
            }
        }
    }
}
