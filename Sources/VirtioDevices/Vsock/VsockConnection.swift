// One vsock connection between a guest socket and a host stream: the state machine and
// credit accounting of Cloud Hypervisor's (and Firecracker's) connection, with the same
// states, the same packets yielded in the same order and the same flow-control fields.

/// Where a vsock connection is in its life.
public enum VsockConnectionState: Equatable, Sendable {
    /// The host connected (`CONNECT <port>`); the guest has not answered the request yet.
    case localInit
    /// The guest sent a request; the device has not answered yet.
    case peerInit
    /// Both sides agreed; data flows.
    case established
    /// The host stream ended: (will receive no more, will send no more), host side.
    case localClosed(noReceive: Bool, noSend: Bool)
    /// The guest sent `SHUTDOWN`: (will receive no more, will send no more), guest side.
    case peerClosed(noReceive: Bool, noSend: Bool)
    /// The connection is to be reset as soon as possible.
    case killed
}

/// What a connection wants to tell the guest next, in the order it tells it.
struct VsockPendingRx: OptionSet {
    let rawValue: UInt8
    static let request = VsockPendingRx(rawValue: 1 << 0)
    static let response = VsockPendingRx(rawValue: 1 << 1)
    static let reset = VsockPendingRx(rawValue: 1 << 2)
    static let readWrite = VsockPendingRx(rawValue: 1 << 3)
    static let creditUpdate = VsockPendingRx(rawValue: 1 << 4)
}

/// One connection, keyed by (local port, peer port). `local` is the host end (CID 2),
/// `peer` the guest.
final class VsockConnection {
    private(set) var state: VsockConnectionState
    let localCID: UInt64
    let peerCID: UInt64
    let localPort: UInt32
    let peerPort: UInt32
    let stream: any VsockHostStream
    private var txBuffer = VsockTxBuffer()
    /// Guest bytes written to the host stream (what the guest may reuse), wrapping.
    private(set) var forwardCount: UInt32 = 0
    /// The guest's receive buffer size.
    private(set) var peerBufferAllocation: UInt32
    /// The guest's count of host bytes it consumed, wrapping.
    private(set) var peerForwardCount: UInt32 = 0
    /// Host bytes sent to the guest, wrapping.
    private(set) var receiveCount: UInt32 = 0
    /// The `forwardCount` the guest last heard of.
    private var lastForwardCountToPeer: UInt32 = 0
    private var pendingRx: VsockPendingRx
    /// When (milliseconds on the device's clock) the connection is killed if still waiting.
    private(set) var expiry: UInt64?
    private var hostWriteShutdown = false
    private var hostHungUp = false

    private init(state: VsockConnectionState, pending: VsockPendingRx, stream: any VsockHostStream, localCID: UInt64,
                 peerCID: UInt64, localPort: UInt32, peerPort: UInt32, peerBufferAllocation: UInt32) {
        self.state = state
        self.pendingRx = pending
        self.stream = stream
        self.localCID = localCID
        self.peerCID = peerCID
        self.localPort = localPort
        self.peerPort = peerPort
        self.peerBufferAllocation = peerBufferAllocation
    }

    /// A connection the guest asked for: it answers `RESPONSE` first.
    static func peerInitiated(stream: any VsockHostStream, guestCID: UInt64, localPort: UInt32, peerPort: UInt32,
                              peerBufferAllocation: UInt32) -> VsockConnection {
        VsockConnection(state: .peerInit, pending: .response, stream: stream, localCID: Vsock.hostCID, peerCID: guestCID,
                        localPort: localPort, peerPort: peerPort, peerBufferAllocation: peerBufferAllocation)
    }

    /// A connection the host asked for: it sends `REQUEST` first.
    static func hostInitiated(stream: any VsockHostStream, guestCID: UInt64, localPort: UInt32, peerPort: UInt32) -> VsockConnection {
        VsockConnection(state: .localInit, pending: .request, stream: stream, localCID: Vsock.hostCID, peerCID: guestCID,
                        localPort: localPort, peerPort: peerPort, peerBufferAllocation: 0)
    }

    /// Whether the connection has something for the guest.
    var hasPendingRx: Bool { !pendingRx.isEmpty }
    /// Guest bytes waiting for the host stream.
    var bufferedCount: Int { txBuffer.count }

    /// Marks the connection for an immediate reset.
    func kill() {
        state = .killed
        pendingRx.insert(.reset)
    }

    /// Whether a deadline is set and not reached at `now`.
    func willExpire(now: UInt64) -> Bool { expiry.map { $0 > now } ?? false }
    /// Whether a deadline is set and reached at `now`.
    func hasExpired(now: UInt64) -> Bool { expiry.map { $0 <= now } ?? false }

    // MARK: - Toward the guest

    /// The next packet for the guest, with at most `capacity` payload bytes, or nil when
    /// the connection has nothing (or cannot fill a buffer of that size).
    func receivePacket(capacity: Int, now: UInt64) -> VsockPacket? {
        var header = VsockHeader(sourceCID: localCID, destinationCID: peerCID, sourcePort: localPort,
                                 destinationPort: peerPort, op: .readWrite, bufferAllocation: Vsock.connectionBufferSize,
                                 forwardCount: forwardCount)
        func yield(_ op: VsockOp, flags: UInt32 = 0) -> VsockPacket {
            header.op = op.rawValue
            header.flags = flags
            return VsockPacket(header: header)
        }
        if pendingRx.remove(.reset) != nil { return yield(.reset) }
        if pendingRx.remove(.response) != nil {
            state = .established
            return yield(.response)
        }
        if pendingRx.remove(.request) != nil {
            expiry = now + Vsock.connectionTimeoutMilliseconds
            return yield(.request)
        }
        if pendingRx.remove(.readWrite) != nil {
            // A receive buffer without room for data cannot take this indication.
            guard capacity > 0 else { return nil }
            if let packet = readWritePacket(&header, capacity: capacity, now: now) { return packet }
        }
        if pendingRx.remove(.creditUpdate) != nil {
            lastForwardCountToPeer = forwardCount
            return yield(.creditUpdate)
        }
        return nil
    }

    /// The packet for a readable host stream: data, a shutdown, a credit request or a reset.
    private func readWritePacket(_ header: inout VsockHeader, capacity: Int, now: UInt64) -> VsockPacket? {
        switch state {
        case .established, .peerClosed(noReceive: false, _): break
        case .localClosed(_, noSend: true) where hostHungUp: break
        default:
            header.op = VsockOp.reset.rawValue
            return VsockPacket(header: header)
        }
        var hostSendsNoMore = false
        if case .localClosed(_, noSend: true) = state { hostSendsNoMore = true }
        if needsCreditFromPeer, !hostSendsNoMore {
            lastForwardCountToPeer = forwardCount
            header.op = VsockOp.creditRequest.rawValue
            return VsockPacket(header: header)
        }
        let (result, bytes) = stream.read(maxCount: min(capacity, peerAvailableCredit))
        switch result {
        case .bytes:
            header.op = VsockOp.readWrite.rawValue
            header.length = UInt32(bytes.count)
            receiveCount &+= UInt32(bytes.count)
            lastForwardCountToPeer = forwardCount
            return VsockPacket(header: header, payload: bytes)
        case .endOfStream:
            header.op = VsockOp.shutdown.rawValue
            if hostHungUp {
                state = .localClosed(noReceive: true, noSend: true)
                expiry = now + Vsock.connectionTimeoutMilliseconds
                header.flags = Vsock.shutdownReceive | Vsock.shutdownSend
            } else if case .peerClosed(_, noSend: true) = state {
                state = .peerClosed(noReceive: true, noSend: true)
                if txBuffer.isEmpty {
                    header.op = VsockOp.reset.rawValue
                } else {
                    expiry = now + Vsock.connectionTimeoutMilliseconds
                    header.flags = Vsock.shutdownSend
                }
            } else {
                state = .localClosed(noReceive: false, noSend: true)
                header.flags = Vsock.shutdownSend
            }
            lastForwardCountToPeer = forwardCount
            return VsockPacket(header: header)
        case .wouldBlock:
            // Spurious readiness: nothing to send now.
            return nil
        case .failed:
            header.op = VsockOp.reset.rawValue
            lastForwardCountToPeer = forwardCount
            return VsockPacket(header: header)
        }
    }

    // MARK: - From the guest

    /// Takes a guest packet for this connection (header checked by the muxer, `payload`
    /// of `header.length` bytes).
    func sendPacket(_ header: VsockHeader, payload: ArraySlice<UInt8>, now: UInt64) {
        peerBufferAllocation = header.bufferAllocation
        peerForwardCount = header.forwardCount
        let op = header.operation
        switch (state, op) {
        case (.established, .readWrite), (.peerClosed(_, noSend: false), .readWrite), (.localClosed(noReceive: false, _), .readWrite):
            // An empty data packet is dropped.
            guard !payload.isEmpty else { return }
            guard forward(payload) else {
                kill()
                return
            }
            if peerNeedsCreditUpdate { pendingRx.insert(.creditUpdate) }
        case (.localInit, .response):
            expiry = nil
            state = .established
        case (.established, .shutdown):
            let noReceive = header.flags & Vsock.shutdownReceive != 0
            let noSend = header.flags & Vsock.shutdownSend != 0
            state = .peerClosed(noReceive: noReceive, noSend: noSend)
            if noReceive && noSend {
                if txBuffer.isEmpty { pendingRx.insert(.reset) } else { expiry = now + Vsock.connectionTimeoutMilliseconds }
            } else if noSend {
                shutdownHostWriteSide()
            }
        case (.peerClosed(let wasNoReceive, let wasNoSend), .shutdown):
            let noReceive = wasNoReceive || header.flags & Vsock.shutdownReceive != 0
            let noSend = wasNoSend || header.flags & Vsock.shutdownSend != 0
            state = .peerClosed(noReceive: noReceive, noSend: noSend)
            if noReceive && noSend && txBuffer.isEmpty {
                pendingRx.insert(.reset)
            } else if noSend && !wasNoSend {
                shutdownHostWriteSide()
            }
        case (.localClosed, .shutdown):
            if header.flags & Vsock.shutdownSend != 0 {
                state = .peerClosed(noReceive: true, noSend: true)
                if txBuffer.isEmpty { pendingRx.insert(.reset) } else { expiry = now + Vsock.connectionTimeoutMilliseconds }
            }
        case (.established, .creditUpdate), (.peerInit, .creditUpdate), (.peerClosed(noReceive: false, _), .creditUpdate):
            // The new credit is recorded above; the muxer re-evaluates readability.
            break
        case (.established, .creditRequest), (.peerInit, .creditRequest), (.peerClosed(_, noSend: false), .creditRequest),
             (.localClosed(noReceive: false, _), .creditRequest):
            pendingRx.insert(.creditUpdate)
        default:
            // Anything else for this state is dropped, as Cloud Hypervisor does.
            break
        }
    }

    /// Writes guest data to the host stream, buffering what it does not take; false when
    /// the stream failed or the buffer would overflow (the guest ignored its credit).
    private func forward(_ payload: ArraySlice<UInt8>) -> Bool {
        if !txBuffer.isEmpty { return txBuffer.push(payload) }
        var written = 0
        switch stream.write(payload) {
        case .bytes(let count): written = count
        case .wouldBlock, .endOfStream: written = 0
        case .failed: return false
        }
        forwardCount &+= UInt32(written)
        if written < payload.count { return txBuffer.push(payload.dropFirst(written)) }
        return true
    }

    private func shutdownHostWriteSide() {
        guard !hostWriteShutdown, txBuffer.isEmpty else { return }
        stream.shutdownWrite()
        hostWriteShutdown = true
    }

    // MARK: - Host readiness

    /// What to watch the host stream for now. Besides Cloud Hypervisor's rules, a stream
    /// whose readability already waits for a guest buffer is not watched for reading (no
    /// busy loop while the guest posts none), and a killed one not at all.
    var interest: VsockInterest {
        if state == .killed { return [] }
        var interest: VsockInterest = txBuffer.isEmpty ? [] : .writable
        switch state {
        case .peerClosed(noReceive: true, _): break
        case .localClosed(_, noSend: true):
            if !hostHungUp { interest.insert(.hangUp) }
        default:
            if !needsCreditFromPeer { interest.insert(.readable) }
        }
        if pendingRx.contains(.readWrite) { interest.remove([.readable, .hangUp]) }
        return interest
    }

    /// The host stream is ready: `readable`/`hangUp` queue a read for the guest,
    /// `writable` flushes buffered guest data.
    func hostReady(readable: Bool, writable: Bool, hangUp: Bool) {
        if hangUp {
            hostHungUp = true
            pendingRx.insert(.readWrite)
        }
        if readable { pendingRx.insert(.readWrite) }
        guard writable, !txBuffer.isEmpty else { return }
        switch txBuffer.flush(to: stream) {
        case .success(let written):
            forwardCount &+= UInt32(written)
        case .failure(let error):
            forwardCount &+= UInt32(error.written)
            kill()
            return
        }
        if state == .peerClosed(noReceive: true, noSend: true), txBuffer.isEmpty {
            pendingRx.insert(.reset)
        } else if case .peerClosed(_, noSend: true) = state, txBuffer.isEmpty {
            shutdownHostWriteSide()
        } else if peerNeedsCreditUpdate {
            pendingRx.insert(.creditUpdate)
        }
    }

    /// Writes `bytes` straight to the host stream (the `OK <port>` acknowledgement);
    /// returns whether all went out.
    func writeRaw(_ bytes: [UInt8]) -> Bool {
        if case .bytes(let count) = stream.write(bytes[...]) { return count == bytes.count }
        return false
    }

    // MARK: - Credit

    /// Whether the guest's idea of our free buffer space fell below the threshold.
    private var peerNeedsCreditUpdate: Bool {
        let seenFree = Vsock.connectionBufferSize &- (forwardCount &- lastForwardCountToPeer)
        return seenFree < Vsock.creditUpdateThreshold
    }

    /// Whether the guest has no room for more host data.
    private var needsCreditFromPeer: Bool { peerAvailableCredit == 0 }

    /// The host bytes the guest can still take.
    var peerAvailableCredit: Int { Int(peerBufferAllocation &- (receiveCount &- peerForwardCount)) }
}
