import HostSystem
import Testing
import VhostUser

@Suite("vhost-user front-end")
struct VhostUserFrontendTests {
    @Test func negotiationFollowsCloudHypervisor() throws {
        // GET_FEATURES: VERSION_1 | PROTOCOL_FEATURES | EVENT_IDX; GET_PROTOCOL_FEATURES: MQ | REPLY_ACK | CONFIG;
        // SET_PROTOCOL_FEATURES is not acknowledged (REPLY_ACK starts after it); GET_QUEUE_NUM: 2.
        let replies = replyBytes(1, VhostUserPayload.u64(1 << 32 | 1 << 30 | 1 << 29))
            + replyBytes(15, VhostUserPayload.u64(1 << 0 | 1 << 3 | 1 << 9))
            + replyBytes(17, VhostUserPayload.u64(2))
            + replyBytes(8, VhostUserPayload.u64(0))
        let channel = ReplayVhostUserChannel(replies: replies)
        let frontend = VhostUserFrontend(channel: channel)
        let (features, protocolFeatures) = try frontend.negotiate(features: 1 << 32 | 1 << 30 | 1 << 28,
                                                                  protocolFeatures: [.multiQueue, .replyAck])
        #expect(features == 1 << 32 | 1 << 30)
        #expect(protocolFeatures == [.multiQueue, .replyAck])
        #expect(frontend.acknowledgesRequests)
        #expect(try frontend.getQueueNum() == 2)
        try frontend.setVringNum(index: 0, size: 1024)
        let requests = channel.sent.map { $0.bytes[0] }
        #expect(requests == [3, 1, 15, 16, 17, 8])
        // SET_OWNER went before REPLY_ACK: no NEED_REPLY; SET_VRING_NUM after it: NEED_REPLY.
        #expect(channel.sent[0].bytes[4] == 0x1)
        #expect(channel.sent[5].bytes[4] == 0x9)
        #expect(Array(channel.sent[3].bytes[12...]) == VhostUserPayload.u64(1 << 0 | 1 << 3))
    }

    @Test("negotiating again on the same connection (a VM rebuilt by a reboot) does not claim the back-end twice")
    func aSecondNegotiationSendsNoSetOwner() throws {
        let channel = ReplayVhostUserChannel(replies: replyBytes(1, VhostUserPayload.u64(1 << 32)) + replyBytes(1, VhostUserPayload.u64(1 << 32)))
        let frontend = VhostUserFrontend(channel: channel)
        #expect(!frontend.isOwner)
        _ = try frontend.negotiate(features: 1 << 32, protocolFeatures: [])
        #expect(frontend.isOwner)
        _ = try frontend.negotiate(features: 1 << 32, protocolFeatures: [])
        #expect(channel.sent.map { $0.bytes[0] } == [3, 1, 1])
    }

    @Test func aBackendWithoutProtocolFeaturesIsNotAskedForThem() throws {
        let channel = ReplayVhostUserChannel(replies: replyBytes(1, VhostUserPayload.u64(1 << 32)))
        let frontend = VhostUserFrontend(channel: channel)
        let (features, protocolFeatures) = try frontend.negotiate(features: 1 << 32 | 1 << 30, protocolFeatures: [.replyAck])
        #expect(features == 1 << 32 && protocolFeatures.isEmpty)
        #expect(channel.sent.count == 2)
        #expect(!frontend.acknowledgesRequests)
    }

    @Test func aRefusedAcknowledgementFailsTheRequest() throws {
        let channel = ReplayVhostUserChannel(replies: replyBytes(5, VhostUserPayload.u64(1)))
        let frontend = VhostUserFrontend(channel: channel)
        try frontend.setProtocolFeatures([.replyAck])
        #expect(throws: VhostUserError.refused(request: .setMemTable, status: 1)) {
            try frontend.setMemTable([VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 4096, userAddress: 0x1000, mmapOffset: 0)],
                                     descriptors: [7])
        }
        #expect(channel.sent.last?.descriptors == [7])
    }

    @Test func aRefusalKeepsTheConnectionAGarbledReplyEndsIt() throws {
        let channel = ReplayVhostUserChannel(replies: replyBytes(8, VhostUserPayload.u64(3)) + replyBytes(8, VhostUserPayload.u64(0))
            + replyBytes(9, [1, 2, 3]) + replyBytes(10, VhostUserPayload.u64(0)))
        let frontend = VhostUserFrontend(channel: channel)
        try frontend.setProtocolFeatures([.replyAck])
        #expect(throws: VhostUserError.refused(request: .setVringNum, status: 3)) { try frontend.setVringNum(index: 0, size: 8) }
        try frontend.setVringNum(index: 0, size: 16)
        #expect(throws: VhostUserError.wrongPayloadSize(request: .setVringAddr, expected: 8, got: 3)) {
            try frontend.setVringAddr(VhostUserVringAddress(index: 0, descriptorTable: 0, usedRing: 0, availableRing: 0))
        }
        #expect(throws: VhostUserError.self) { try frontend.setVringBase(index: 0, base: 0) }
        #expect(channel.sent.count == 4)
    }

    @Test func aBackendThatHangsUpOrLiesIsAnError() {
        let frontend = VhostUserFrontend(channel: ReplayVhostUserChannel(replies: []))
        #expect(throws: VhostUserError.closed(request: .getFeatures)) { try frontend.getFeatures() }
        let lying = VhostUserFrontend(channel: ReplayVhostUserChannel(replies: replyBytes(11, VhostUserPayload.vringState(index: 4, value: 1))))
        #expect(throws: VhostUserError.wrongQueue(request: .getVringBase, expected: 0, got: 4)) { try lying.getVringBase(index: 0) }
        #expect(throws: VhostUserError.tooManyRegions(9)) {
            try frontend.setMemTable(Array(repeating: VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 1, userAddress: 0, mmapOffset: 0), count: 9),
                                     descriptors: Array(repeating: 0, count: 9))
        }
    }

    /// Over a real socket pair: descriptors go with SET_VRING_CALL, and a silent back-end times out.
    @Test func unixChannelPassesDescriptorsAndTimesOut() throws {
        let (near, far) = try UnixSocket.pair()
        let frontend = VhostUserFrontend(channel: UnixVhostUserChannel(socket: near, timeoutMilliseconds: 100))
        let event = try EventFD()
        try frontend.setVringCall(index: 1, descriptor: event.rawValue)
        let received = try #require(try far.receive(maxBytes: 64))
        #expect(received.bytes == [13, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        #expect(received.descriptors.count == 1)
        #expect(throws: VhostUserError.timedOut(request: .getFeatures, milliseconds: 100)) { try frontend.getFeatures() }
        // A reply that comes late would answer the wrong request: the connection is not used again.
        _ = try far.send(replyBytes(1, VhostUserPayload.u64(5)))
        #expect(throws: VhostUserError.connectionBroken(reason: "GET_FEATURES: " + VhostUserError.timedOut(request: .getFeatures, milliseconds: 100).description)) {
            try frontend.getFeatures()
        }
    }
}
