import GuestMemory
import VirtioQueue

/// Why one vsock chain was refused (it is returned unused; the queue goes on).
enum VsockChainError: Error, Equatable {
    /// A transmit buffer the device may only write, or a receive buffer it may only read.
    case wrongDirection
    /// The first buffer cannot hold the 44-byte header.
    case headerTooSmall(UInt32)
    /// The header's `len` is above 64 KiB.
    case payloadTooLong(UInt32)
    /// The buffers cannot hold the payload (or a receive chain has more than two buffers).
    case bufferTooSmall
    /// Guest memory refused the copy.
    case memory
}

/// The receive and transmit queue loops of ``VirtioVsock``, following Cloud Hypervisor: a
/// malformed chain is returned with length 0 and skipped; a broken queue stops the device.
enum VsockQueues {
    /// Hands every transmit packet to the muxer.
    static func transmit(_ running: inout VirtioVsock.Running, muxer: VsockMuxer, now: UInt64) -> Result<Void, VirtioDeviceError> {
        let index = VirtioVsock.transmitQueue
        var used = false
        defer { if used { signal(&running, index) } }
        while true {
            let chain: DescriptorChain
            do {
                guard let next = try running.queues[index].popDescriptorChain(in: running.memory) else { return .success(()) }
                chain = next
            } catch {
                return .failure(.queue(index: index, error))
            }
            if case .success(let (header, payload)) = parseTransmit(chain, memory: running.memory) {
                muxer.sendPacket(header, payload: payload[...], now: now)
            }
            do {
                try running.queues[index].addUsed(head: chain.head, length: 0, in: running.memory)
            } catch {
                return .failure(.queue(index: index, error))
            }
            used = true
        }
    }

    /// Fills receive buffers with the packets the muxer owes the guest.
    static func receive(_ running: inout VirtioVsock.Running, muxer: VsockMuxer, now: UInt64) -> Result<Void, VirtioDeviceError> {
        let index = VirtioVsock.receiveQueue
        var used = false
        defer { if used { signal(&running, index) } }
        while muxer.hasPendingRx {
            let chain: DescriptorChain
            do {
                guard let next = try running.queues[index].popDescriptorChain(in: running.memory) else { return .success(()) }
                chain = next
            } catch {
                return .failure(.queue(index: index, error))
            }
            var length: UInt32 = 0
            switch parseReceive(chain) {
            case .success(let (header, buffer)):
                guard let packet = muxer.receivePacket(capacity: min(Vsock.maxPayload, Int(buffer?.length ?? 0)), now: now) else {
                    // Nothing owed after all: the buffer stays available.
                    running.queues[index].undoPop()
                    return .success(())
                }
                if (try? commit(packet, header: header, buffer: buffer, memory: running.memory)) != nil {
                    length = UInt32(Vsock.headerSize + packet.payload.count)
                }
            case .failure:
                length = 0
            }
            do {
                try running.queues[index].addUsed(head: chain.head, length: length, in: running.memory)
            } catch {
                return .failure(.queue(index: index, error))
            }
            used = true
        }
        return .success(())
    }

    /// Interrupts the driver for `index` when it asked to be.
    private static func signal(_ running: inout VirtioVsock.Running, _ index: Int) {
        if (try? running.queues[index].needsNotification(in: running.memory)) == true { running.interrupt.signalQueue(index) }
    }

    /// The header and payload of a transmit chain: the header in the first (readable)
    /// buffer; the payload after it in the same buffer when the chain has one buffer, else
    /// in the following readable buffers.
    static func parseTransmit(_ chain: DescriptorChain, memory: GuestMemory) -> Result<(VsockHeader, [UInt8]), VsockChainError> {
        guard let head = chain.descriptors.first, !head.isWritable else { return .failure(.wrongDirection) }
        guard head.length >= UInt32(Vsock.headerSize) else { return .failure(.headerTooSmall(head.length)) }
        guard let raw = try? memory.readBytes(count: Vsock.headerSize, at: head.address),
              let header = VsockHeader(decoding: raw) else { return .failure(.memory) }
        let length = Int(header.length)
        if length == 0 { return .success((header, [])) }
        guard length <= Vsock.maxPayload else { return .failure(.payloadTooLong(header.length)) }
        var ranges: [(GuestAddress, Int)] = []
        if chain.descriptors.count == 1 {
            ranges = [(GuestAddress(head.address.rawValue + UInt64(Vsock.headerSize)), Int(head.length) - Vsock.headerSize)]
        } else {
            let data = chain.descriptors.dropFirst()
            guard !data.contains(where: \.isWritable) else { return .failure(.wrongDirection) }
            ranges = data.map { ($0.address, Int($0.length)) }
        }
        guard ranges.reduce(0, { $0 + $1.1 }) >= length else { return .failure(.bufferTooSmall) }
        var payload: [UInt8] = []
        payload.reserveCapacity(length)
        for (address, size) in ranges where payload.count < length {
            let take = min(size, length - payload.count)
            guard take > 0 else { continue }
            guard let bytes = try? memory.readBytes(count: take, at: address) else { return .failure(.memory) }
            payload += bytes
        }
        return .success((header, payload))
    }

    /// Where a receive packet goes: the header at the first (writable) buffer; the data
    /// after it in the same buffer, or in a second buffer (at most two, as Cloud Hypervisor).
    static func parseReceive(_ chain: DescriptorChain) -> Result<(Descriptor, Descriptor?), VsockChainError> {
        guard let head = chain.descriptors.first, head.isWritable else { return .failure(.wrongDirection) }
        guard head.length >= UInt32(Vsock.headerSize) else { return .failure(.headerTooSmall(head.length)) }
        if chain.descriptors.count > 2 { return .failure(.bufferTooSmall) }
        if chain.descriptors.count == 2 {
            let buffer = chain.descriptors[1]
            return .success((head, buffer.length == 0 ? nil : buffer))
        }
        let room = head.length - UInt32(Vsock.headerSize)
        let buffer = room == 0 ? nil
            : Descriptor(address: GuestAddress(head.address.rawValue + UInt64(Vsock.headerSize)), length: room, isWritable: true)
        return .success((head, buffer))
    }

    /// Writes `packet` into a receive chain's header and data buffers.
    private static func commit(_ packet: VsockPacket, header: Descriptor, buffer: Descriptor?, memory: GuestMemory) throws {
        try memory.write(bytes: packet.header.encoded, at: header.address)
        if !packet.payload.isEmpty, let buffer { try memory.write(bytes: packet.payload, at: buffer.address) }
    }
}
