import HostSystem
import Hypervisor
import PCI
import Synchronization
import VMAllocator

/// Why an interrupt could not be set up, with the layer that refused it.
public enum InterruptError: Error, CustomStringConvertible {
    /// The GSI allocator ran out or was misused.
    case allocation(AllocatorError)
    /// The hypervisor refused a routing table or irqfd.
    case hypervisor(HypervisorError)
    /// An eventfd could not be made or signalled.
    case host(SystemError)
    /// The vector was released already or belongs to another router.
    case unknownVector(gsi: UInt32)

    /// A sentence naming the failure.
    public var description: String {
        switch self {
        case .allocation(let error): return "cannot allocate an interrupt: \(error)"
        case .hypervisor(let error): return "cannot route an interrupt: \(error)"
        case .host(let error): return "cannot signal an interrupt: \(error)"
        case .unknownVector(let gsi): return "GSI \(gsi) is not an MSI vector of this router"
        }
    }
}

/// One message-signalled interrupt: a GSI and the eventfd (an irqfd) that fires it.
public final class MSIVector: Sendable {
    /// The GSI the vector is routed through.
    public let gsi: UInt32
    /// The irqfd: a signal on it injects the MSI without a trip through the VMM.
    public let event: EventFD

    init(gsi: UInt32, event: EventFD) {
        self.gsi = gsi
        self.event = event
    }

    /// Fires the interrupt.
    public func trigger() throws(InterruptError) {
        do { try event.signal() } catch { throw .host(error) }
    }
}

/// Owns a VM's GSI routing table: the x86 legacy routes (PIC and IOAPIC pins) plus one MSI
/// route per vector a device has unmasked. KVM takes the table whole, so every change
/// rebuilds and installs it (`KVM_SET_GSI_ROUTING`).
public final class GSIRouter: Sendable {
    private struct State {
        var allocator: GSIAllocator
        var vectors: [UInt32: MSIVector] = [:]
        var messages: [UInt32: (address: UInt64, data: UInt32)] = [:]
    }

    /// The VM whose routing this is.
    public let vm: any VirtualMachine
    private let state: Mutex<State>

    /// Takes over `vm`'s routing table and installs the legacy routes.
    public init(vm: any VirtualMachine, allocator: GSIAllocator = GSIAllocator()) throws(InterruptError) {
        self.vm = vm
        state = Mutex(State(allocator: allocator))
        try commit()
    }

    /// The routes currently installed: the legacy ones, then the unmasked MSIs by GSI.
    public var routes: [InterruptRoute] {
        state.withLock { Self.table(from: $0) }
    }

    private static func table(from state: State) -> [InterruptRoute] {
        InterruptRoute.x86LegacyRoutes() + state.messages.keys.sorted().map { gsi in
            let message = state.messages[gsi]!
            return .msi(gsi: gsi, address: message.address, data: message.data)
        }
    }

    private func commit() throws(InterruptError) {
        let table = state.withLock { Self.table(from: $0) }
        do { try vm.setGSIRouting(table) } catch { throw .hypervisor(error) }
    }

    /// Allocates a GSI and an irqfd for it. The vector fires nothing until `setMessage`
    /// gives it an unmasked address and data.
    public func allocate() throws(InterruptError) -> MSIVector {
        let gsi: UInt32
        do {
            gsi = try state.withLock { (s: inout State) throws(AllocatorError) -> UInt32 in try s.allocator.allocateGSI() }
        } catch {
            throw .allocation(error)
        }
        do {
            let event = try EventFD()
            try vm.registerIRQFD(event, gsi: gsi, resample: nil)
            let vector = MSIVector(gsi: gsi, event: event)
            state.withLock { $0.vectors[gsi] = vector }
            return vector
        } catch {
            _ = try? state.withLock { (s: inout State) throws(AllocatorError) in try s.allocator.free(gsi) }
            if let error = error as? HypervisorError { throw .hypervisor(error) }
            if let error = error as? SystemError { throw .host(error) }
            throw .unknownVector(gsi: gsi)
        }
    }

    /// Routes `vector` to the MSI `address`/`data`, or removes its route while `masked`.
    public func setMessage(_ vector: MSIVector, address: UInt64, data: UInt32, masked: Bool) throws(InterruptError) {
        // nil: not our vector; false: the table is unchanged (the guest writes an entry's
        // address and data while it is still masked), so KVM needs no new table.
        let changed = state.withLock { (s: inout State) -> Bool? in
            guard s.vectors[vector.gsi] === vector else { return nil }
            let old = s.messages[vector.gsi]
            if masked { s.messages[vector.gsi] = nil } else { s.messages[vector.gsi] = (address, data) }
            let new = s.messages[vector.gsi]
            return old?.address != new?.address || old?.data != new?.data
        }
        guard let changed else { throw .unknownVector(gsi: vector.gsi) }
        if changed { try commit() }
    }

    /// Unregisters the vector's irqfd, removes its route and frees its GSI.
    public func release(_ vector: MSIVector) throws(InterruptError) {
        let known = state.withLock { (s: inout State) -> Bool in
            guard s.vectors[vector.gsi] === vector else { return false }
            s.vectors[vector.gsi] = nil
            s.messages[vector.gsi] = nil
            _ = try? s.allocator.free(vector.gsi)
            return true
        }
        guard known else { throw .unknownVector(gsi: vector.gsi) }
        do { try vm.unregisterIRQFD(vector.event, gsi: vector.gsi) } catch { throw .hypervisor(error) }
        try commit()
    }
}

/// PCI MSI-X routing for one device backed by a `GSIRouter`: each table entry the guest
/// programs becomes a KVM MSI route, and a delivered vector signals its irqfd.
public final class KVMMSIXRouting: MSIXRouting, Sendable {
    /// The router the vectors belong to.
    public let router: GSIRouter
    /// One vector per MSI-X table entry.
    public let vectors: [MSIVector]
    private let lastError = Mutex<InterruptError?>(nil)

    /// Allocates `count` vectors from `router`.
    public init(router: GSIRouter, count: Int) throws(InterruptError) {
        self.router = router
        var vectors: [MSIVector] = []
        for _ in 0..<count { vectors.append(try router.allocate()) }
        self.vectors = vectors
    }

    /// The last routing or delivery failure, if any (the PCI layer cannot take errors).
    public var error: InterruptError? { lastError.withLock { $0 } }

    /// Updates the route of `vector` as the guest programmed its table entry.
    public func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) {
        guard vectors.indices.contains(vector) else { return }
        do {
            try router.setMessage(vectors[vector], address: address, data: data, masked: masked)
        } catch {
            lastError.withLock { $0 = error }
        }
    }

    /// Fires `vector`'s irqfd.
    public func deliver(vector: Int) {
        guard vectors.indices.contains(vector) else { return }
        do {
            try vectors[vector].trigger()
        } catch {
            lastError.withLock { $0 = error }
        }
    }

    /// Unregisters every vector.
    public func release() {
        for vector in vectors { try? router.release(vector) }
    }
}
