import GuestMemory
import VirtioQueue

extension VirtioMem {
    /// A request as the driver wrote it, and where its response goes.
    struct ParsedRequest: Equatable {
        var type: UInt16
        var address: UInt64
        var blocks: UInt16
        var status: GuestAddress
    }

    static func serve(_ core: inout Core, host: any BalloonMemory) -> Result<Void, VirtioDeviceError> {
        let memory = core.running!.memory
        var failure: VirtioDeviceError?
        var used = false
        func step<T>(_ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
            do { return try body() } catch { throw .queue(index: 0, error) }
        }
        do throws(VirtioDeviceError) {
            repeat {
                while let chain = try step({ () throws(QueueError) in try core.running!.queue.popDescriptorChain(in: memory) }) {
                    var length: UInt32 = 0
                    if let request = parse(chain, memory: memory) {
                        let (response, state) = answer(request, core: &core, memory: memory, host: host)
                        var bytes = [UInt8](repeating: 0, count: responseSize)
                        bytes[0] = UInt8(response.rawValue & 0xFF)
                        bytes[1] = UInt8(response.rawValue >> 8)
                        bytes[8] = UInt8(state & 0xFF)
                        bytes[9] = UInt8(state >> 8)
                        if (try? memory.write(bytes: bytes, at: request.status)) != nil { length = UInt32(responseSize) }
                    }
                    try step { () throws(QueueError) in try core.running!.queue.addUsed(head: chain.head, length: length, in: memory) }
                    used = true
                }
            } while try step({ () throws(QueueError) in try core.running!.queue.enableNotification(in: memory) })
        } catch {
            failure = error
        }
        if used, (try? core.running!.queue.needsNotification(in: memory)) == true {
            core.running!.interrupt.signalQueue(0)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// Cloud Hypervisor's `Request::parse`: a device-readable descriptor of at least 24 bytes
    /// holding the request, then a device-writable one of at least 10 bytes for the response,
    /// both inside guest memory; anything else is nil.
    static func parse(_ chain: DescriptorChain, memory: GuestMemory) -> ParsedRequest? {
        let descriptors = chain.descriptors
        guard descriptors.count >= 2 else { return nil }
        let request = descriptors[0]
        let status = descriptors[1]
        guard !request.isWritable, request.length >= UInt32(requestSize),
              (try? memory.checkRange(request.address, length: Int(request.length))) != nil,
              let bytes = try? memory.readBytes(count: requestSize, at: request.address) else { return nil }
        guard status.isWritable, status.length >= UInt32(responseSize),
              (try? memory.checkRange(status.address, length: Int(status.length))) != nil else { return nil }
        func le(_ offset: Int, _ count: Int) -> UInt64 {
            (0..<count).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
        }
        return ParsedRequest(type: UInt16(le(0, 2)), address: le(8, 8), blocks: UInt16(le(16, 2)), status: status.address)
    }

    /// The response and state for one request (state 0 except for STATE).
    static func answer(_ request: ParsedRequest, core: inout Core, memory: GuestMemory, host: any BalloonMemory) -> (Response, UInt16) {
        switch Request(rawValue: request.type) {
        case .plug: (change(request, plug: true, core: &core, memory: memory, host: host), 0)
        case .unplug: (change(request, plug: false, core: &core, memory: memory, host: host), 0)
        case .unplugAll: (unplugAll(core: &core, memory: memory, host: host), 0)
        case .state: state(request, core: core)
        case nil: (.error, 0)
        }
    }

    /// PLUG or UNPLUG of `blocks` blocks from `address`, in Cloud Hypervisor's order of checks.
    static func change(_ request: ParsedRequest, plug: Bool, core: inout Core, memory: GuestMemory, host: any BalloonMemory) -> Response {
        let config = core.configuration
        let size = UInt64(request.blocks) * config.blockSize
        if plug, config.pluggedSize + size > config.requestedSize { return .nack }
        guard config.isValidRange(request.address, size: size) else { return .error }
        let first = Int((request.address - config.address) / config.blockSize)
        let range = first..<(first + Int(request.blocks))
        guard core.plugged[range].allSatisfy({ $0 == !plug }) else { return .error }
        if !plug {
            do { try host.release(GuestAddress(request.address), length: size, in: memory) } catch { return .error }
        }
        for index in range { core.plugged[index] = plug }
        if plug { core.configuration.pluggedSize += size } else { core.configuration.pluggedSize -= size }
        return .ack
    }

    /// UNPLUG_ALL: the whole region goes back to the host and every block is unplugged.
    static func unplugAll(core: inout Core, memory: GuestMemory, host: any BalloonMemory) -> Response {
        let config = core.configuration
        do { try host.release(GuestAddress(config.address), length: config.regionSize, in: memory) } catch { return .error }
        for index in core.plugged.indices { core.plugged[index] = false }
        core.configuration.pluggedSize = 0
        return .ack
    }

    /// STATE: plugged, unplugged or mixed for a valid range; ERROR otherwise.
    static func state(_ request: ParsedRequest, core: Core) -> (Response, UInt16) {
        let config = core.configuration
        let size = UInt64(request.blocks) * config.blockSize
        guard config.isValidRange(request.address, size: size) else { return (.error, 0) }
        let first = Int((request.address - config.address) / config.blockSize)
        let blocks = core.plugged[first..<(first + Int(request.blocks))]
        if blocks.allSatisfy({ $0 }) { return (.ack, BlockState.plugged.rawValue) }
        if blocks.allSatisfy({ !$0 }) { return (.ack, BlockState.unplugged.rawValue) }
        return (.ack, BlockState.mixed.rawValue)
    }
}
