#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import HostSystem
import Synchronization
import VhostUser
import VirtioDevices
import VirtioQueue

extension VhostUserDeviceBackend {
    /// A ring's kick: activates the device if it is stopped, then serves the ring. Runs on the
    /// ring thread; the state lock is held throughout, so a stop from the socket thread waits
    /// for the request in flight and saves where the rings stood after it.
    func kicked(_ index: Int) {
        state.withLock { state in
            guard state.rings[index].enabled else {
                state.rings[index].kickPending = true
                return
            }
            if !state.active {
                do {
                    try activate(&state)
                } catch {
                    logger.error("starting the device on ring \(index)'s kick: \(error)")
                    return
                }
            }
            do {
                try device.processQueue(index)
            } catch {
                logger.error("ring \(index): \(error)")
            }
        }
    }

    /// Hands the device every ring that has a size, addresses, a kick and is enabled,
    /// translated from the front-end's addresses into guest-physical ones.
    private func activate(_ state: inout State) throws(BackendRingError) {
        guard let table = state.memory else { throw .noMemoryTable }
        let eventIndex = state.ackedFeatures & VirtioFeature.eventIndex != 0
        var queues: [SplitQueue] = []
        for (index, maxSize) in device.queueMaxSizes.enumerated() {
            var queue: SplitQueue
            do { queue = try SplitQueue(maxSize: maxSize) } catch { throw .queue(index: index, "\(error)") }
            let ring = index < state.rings.count ? state.rings[index] : Ring()
            if let address = ring.address, ring.kick != nil, ring.enabled, ring.size != 0 {
                queue.size = ring.size
                queue.descriptorTable = try table.guestAddress(of: address.descriptorTable, ring: index)
                queue.availableRing = try table.guestAddress(of: address.availableRing, ring: index)
                queue.usedRing = try table.guestAddress(of: address.usedRing, ring: index)
                queue.eventIndex = eventIndex
                queue.nextAvailable = ring.base
                queue.nextUsed = ring.base
                do { try queue.activate(in: table.memory) } catch { throw .queue(index: index, "\(error)") }
            }
            queues.append(queue)
        }
        do {
            try device.activate(memory: table.memory, queues: queues, interrupt: calls)
        } catch {
            throw .device("\(error)")
        }
        state.active = true
    }

    /// Stops a running device, keeping each running ring's next available index as its base.
    func stopDevice() {
        state.withLock { state in
            guard state.active else { return }
            for (index, queue) in device.saveDeviceState().queues where index < state.rings.count {
                state.rings[index].base = queue.nextAvailable
            }
            device.reset()
            state.active = false
        }
    }

    /// Empties a kick eventfd's counter.
    static func drain(_ kick: OwnedFileDescriptor) {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { try? kick.read(into: $0) }
    }
}

/// Why the device could not start on a kick.
enum BackendRingError: Error, CustomStringConvertible {
    case noMemoryTable
    case addressOutsideMemory(ring: Int, address: UInt64)
    case queue(index: Int, String)
    case device(String)

    var description: String {
        switch self {
        case .noMemoryTable: "no memory table was set"
        case .addressOutsideMemory(let ring, let address):
            "ring \(ring): address 0x\(String(address, radix: 16)) is in no region of the memory table"
        case .queue(let index, let reason): "ring \(index): \(reason)"
        case .device(let reason): reason
        }
    }
}

/// The guest interrupts: each ring's call eventfd, replaced by `SET_VRING_CALL` at any time.
final class CallInterrupt: VirtioInterrupt {
    private let descriptors: Mutex<[OwnedFileDescriptor?]>

    init(count: Int) { descriptors = Mutex(Array(repeating: nil, count: count)) }

    func set(_ index: Int, _ descriptor: OwnedFileDescriptor?) {
        descriptors.withLock { $0[index] = descriptor }
    }

    func signalQueue(_ queue: Int) {
        descriptors.withLock { calls in
            guard queue < calls.count, let call = calls[queue] else { return }
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { try? call.write($0) }
        }
    }

    /// Configuration changes would need the back-end request channel, which is not offered;
    /// the devices served here never change their configuration on their own.
    func signalConfig() {}
}

/// The guest memory the front-end shared: its regions mapped here, and their addresses in the
/// front-end's own address space (ring addresses arrive in those).
struct MemoryTable: Sendable {
    struct Mapped: Sendable {
        let region: VhostUserMemoryRegion
        let mapping: MemoryMapping
    }
    let mapped: [Mapped]
    let memory: GuestMemory

    private init(mapped: [Mapped]) throws(MemoryTableError) {
        self.mapped = mapped.sorted { $0.region.guestPhysicalAddress < $1.region.guestPhysicalAddress }
        do {
            memory = try GuestMemory(regions: self.mapped.map { m throws(GuestMemoryError) in
                try GuestMemoryRegion(start: GuestAddress(m.region.guestPhysicalAddress), mapping: m.mapping)
            })
        } catch {
            throw .layout("\(error)")
        }
    }

    /// Maps each region's descriptor.
    init(regions: [VhostUserMemoryRegion], descriptors: [OwnedFileDescriptor]) throws(MemoryTableError) {
        var mapped: [Mapped] = []
        for (region, descriptor) in zip(regions, descriptors) {
            mapped.append(try Self.map(region, descriptor))
        }
        try self.init(mapped: mapped)
    }

    func adding(_ region: VhostUserMemoryRegion, descriptor: OwnedFileDescriptor) throws(MemoryTableError) -> MemoryTable {
        try MemoryTable(mapped: mapped + [Self.map(region, descriptor)])
    }

    /// The table without `region`; `nil` when it was the last one.
    func removing(_ region: VhostUserMemoryRegion) throws(MemoryTableError) -> MemoryTable? {
        let kept = mapped.filter { $0.region.guestPhysicalAddress != region.guestPhysicalAddress || $0.region.size != region.size }
        guard kept.count < mapped.count else { throw .unknownRegion(region.guestPhysicalAddress) }
        return kept.isEmpty ? nil : try MemoryTable(mapped: kept)
    }

    private static func map(_ region: VhostUserMemoryRegion, _ descriptor: OwnedFileDescriptor) throws(MemoryTableError) -> Mapped {
        guard region.size > 0, region.size <= UInt64(Int.max), region.mmapOffset <= UInt64(Int64.max),
              region.guestPhysicalAddress.addingReportingOverflow(region.size).overflow == false else {
            throw .badRegion(region.guestPhysicalAddress, region.size)
        }
        // A file (memfd, hugetlbfs, tmpfs) shorter than the region would raise SIGBUS on the
        // first access past its end: such a region is refused here instead.
        if Self.isRegularFile(descriptor), let length = try? descriptor.size() {
            guard region.mmapOffset.addingReportingOverflow(region.size).overflow == false,
                  region.mmapOffset + region.size <= UInt64(length) else {
                throw .pastEndOfFile(region.guestPhysicalAddress, region.mmapOffset + region.size, UInt64(length))
            }
        }
        do {
            let mapping = try MemoryMapping(file: descriptor, offset: Int64(region.mmapOffset), size: Int(region.size), options: [.shared])
            return Mapped(region: region, mapping: mapping)
        } catch {
            throw .map(region.guestPhysicalAddress, "\(error)")
        }
    }

    private static func isRegularFile(_ descriptor: OwnedFileDescriptor) -> Bool {
        var info = stat()
        return fstat(descriptor.rawValue, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
    }

    /// The guest-physical address of `userAddress`, a front-end address.
    func guestAddress(of userAddress: UInt64, ring: Int) throws(BackendRingError) -> GuestAddress {
        for m in mapped where userAddress >= m.region.userAddress && userAddress - m.region.userAddress < m.region.size {
            return GuestAddress(m.region.guestPhysicalAddress + (userAddress - m.region.userAddress))
        }
        throw .addressOutsideMemory(ring: ring, address: userAddress)
    }
}

/// Why a memory table was refused.
enum MemoryTableError: Error, CustomStringConvertible {
    case badRegion(UInt64, UInt64)
    case map(UInt64, String)
    case layout(String)
    case unknownRegion(UInt64)
    case pastEndOfFile(UInt64, UInt64, UInt64)

    var description: String {
        switch self {
        case .badRegion(let start, let size): "memory region at 0x\(String(start, radix: 16)) of \(size) bytes cannot be mapped"
        case .map(let start, let reason): "mapping the memory region at 0x\(String(start, radix: 16)): \(reason)"
        case .layout(let reason): "memory table: \(reason)"
        case .unknownRegion(let start): "no memory region starts at 0x\(String(start, radix: 16))"
        case .pastEndOfFile(let start, let end, let length):
            "the memory region at 0x\(String(start, radix: 16)) ends at byte \(end) of a file of \(length) bytes"
        }
    }
}

/// Reads whole messages from the socket: the header, then its payload, keeping the
/// descriptors that came with them.
struct MessageReader {
    let socket: UnixSocket

    /// The next request, or `nil` when the front-end closed the connection between messages.
    func next() throws -> (BackendRequest, VhostUserHeader, [OwnedFileDescriptor])? {
        var descriptors: [OwnedFileDescriptor] = []
        guard let head = try read(VhostUserHeader.size, into: &descriptors, endAllowed: true) else { return nil }
        let header = try BackendMessage.header(head)
        let payload = try read(Int(header.size), into: &descriptors, endAllowed: false) ?? []
        let request = try BackendMessage.decode(header.request, payload: payload, descriptors: descriptors.count)
        return (request, header, descriptors)
    }

    private func read(_ count: Int, into descriptors: inout [OwnedFileDescriptor], endAllowed: Bool) throws -> [UInt8]? {
        var bytes: [UInt8] = []
        while bytes.count < count {
            _ = try socket.wait(for: .readable, timeoutMilliseconds: -1)
            guard let message = try socket.receive(maxBytes: count - bytes.count) else { continue }
            if message.isEndOfStream {
                if endAllowed && bytes.isEmpty { return nil }
                throw MessageReaderError.closedMidMessage
            }
            bytes += message.bytes
            descriptors += message.descriptors
        }
        return bytes
    }
}

enum MessageReaderError: Error, CustomStringConvertible {
    case closedMidMessage
    var description: String { "the front-end closed the connection in the middle of a message" }
}
