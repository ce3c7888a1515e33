import Arch
import GuestMemory
import VMAllocator
import VirtioDevices

/// Memory hotplug through virtio-mem, as Cloud Hypervisor's memory manager does it with
/// `hotplug_method=virtio-mem`: the whole `hotplug_size` room is one region of guest memory
/// (one KVM memory slot) from boot, left out of the guest's memory map, and the virtio-mem
/// device `mem0` lets the guest plug as much of it as vm.resize asks (`desired_ram` minus the
/// boot RAM, grown or shrunk).
final class VirtioMemSupport: Sendable {
    /// Cloud Hypervisor's id for the default memory zone's virtio-mem device.
    static let deviceID = "mem0"

    /// The device.
    let device: VirtioMem
    /// The RAM the VM booted with (`memory.size`).
    let bootRAM: UInt64

    init(device: VirtioMem, bootRAM: UInt64) {
        self.device = device
        self.bootRAM = bootRAM
    }

    /// Asks the guest for `desired` bytes of RAM in all: `requested_size` becomes `desired`
    /// minus the boot RAM (Cloud Hypervisor's `MemoryManager::resize` with virtio-mem).
    ///
    /// - Throws: a ``MemoryResizeRefusal`` with Cloud Hypervisor's reason, changing nothing,
    ///   below the boot RAM, beyond the region, or not a multiple of the block size.
    func resize(to desired: UInt64) throws(MemoryResizeRefusal) {
        try check(desired)
        do { try device.resize(to: desired - bootRAM) } catch { throw refusal(error) }
    }

    /// Refuses, as ``resize(to:)`` would, a `desired` size it cannot take; changes nothing.
    func check(_ desired: UInt64) throws(MemoryResizeRefusal) {
        guard desired >= bootRAM else {
            throw MemoryResizeRefusal(description: "Cannot resize the guest memory below its boot size: \(desired) bytes asked, \(bootRAM) bytes at boot")
        }
        var probe = device.configuration
        do { try probe.resize(to: desired - bootRAM) } catch { throw refusal(error) }
    }

    private func refusal(_ error: VirtioMemError) -> MemoryResizeRefusal {
        MemoryResizeRefusal(description: "Failed to virtio-mem resize: \(error) (hotplug_size is \(device.configuration.regionSize) bytes)")
    }

    /// The RAM the guest would have with `requested` bytes plugged.
    var requestedRAM: UInt64 { bootRAM + device.configuration.requestedSize }

    /// Where the virtio-mem region starts for boot RAM of `size` bytes (Cloud Hypervisor's
    /// `start_addr` with hotplug allowed, rounded up to 128 MiB).
    static func regionStart(bootRAM size: UInt64) throws -> UInt64 {
        let regions = try X86Layout.ramRegions(size: size)
        let last = regions.map { $0.0.rawValue + $0.1 - 1 }.max() ?? 0
        let start = MemoryHotplugSupport.regionStart(after: last)
        return (start + VirtioMem.regionAlignment - 1) & ~(VirtioMem.regionAlignment - 1)
    }

    /// The virtio-mem region of `config`, if it asks for one: (start, size).
    static func region(_ config: MemoryConfig) throws -> (start: UInt64, size: UInt64)? {
        guard config.hotplugMethod == .virtioMem, let size = config.hotplugSize, size > 0 else { return nil }
        return (try regionStart(bootRAM: config.size), size)
    }
}

extension VMBuilder {
    /// Attaches the virtio-mem device over the region `createMemory` made for it, with
    /// `hotplugged_size` requested at boot.
    func attachVirtioMem(_ config: MemoryConfig, region: (start: UInt64, size: UInt64), context: VirtioAttachContext,
                         bars: inout BARWindows) throws -> (VirtioPCIAttachment, String, VirtioMemSupport) {
        let device: VirtioMem
        do {
            device = try VirtioMem(address: region.start, size: region.size, requested: config.hotpluggedSize ?? 0)
        } catch {
            throw VMMError(description: "virtio-mem: \(error)")
        }
        let (attachment, address) = try attachVirtio(device, id: VirtioMemSupport.deviceID, context: context, bars: &bars)
        logger.info("\(VirtioMemSupport.deviceID): virtio-mem region of \(region.size) bytes at 0x\(String(region.start, radix: 16)), \(config.hotpluggedSize ?? 0) requested")
        return (attachment, address, VirtioMemSupport(device: device, bootRAM: config.size))
    }
}
