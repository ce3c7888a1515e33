import CLinux
import HostSystem
import Hypervisor
import VMAllocator
import VirtioDevices

/// A virtio-pmem device of a running VM: its backing file mapped into the guest as a memory
/// slot of its own in the 64-bit device area.
struct AttachedPmem: @unchecked Sendable {
    // SAFETY (Sendable): every member is itself thread-safe; `vm` only takes the slot removal.
    let id: String
    let device: VirtioPmem
    let attachment: VirtioPCIAttachment
    let address: String
    /// The guest-physical range of the persistent memory.
    let range: AddressRange
    /// The host mapping of the file (unmapped when the last reference goes, with the VM).
    let mapping: MemoryMapping
    /// The KVM memory slot that maps `range` to `mapping`.
    let slot: UInt32
    let vm: any VirtualMachine

    /// Removes the memory slot (the VM is going away; its vCPUs have stopped). The mapping goes
    /// with the last reference to this value, when the VM is released.
    func close() {
        try? vm.removeMemorySlot(slot)
    }
}

/// The backing file of a pmem device, opened and sized by Cloud Hypervisor's rules.
struct PmemBacking {
    let file: OwnedFileDescriptor
    let size: UInt64

    /// Opens `config.file`:
    /// - a directory: an unnamed file made in it (`O_TMPFILE`) of `size` bytes, which must be given;
    /// - otherwise the file itself, read-write, or read-only with `discard_writes=on` (the guest
    ///   then writes to a private copy).
    ///
    /// The size is `size=` or the file's. It must be a multiple of 2 MiB. A writable regular file
    /// smaller than `size=` is extended to it (mapping past its end would fault on access); a
    /// read-only one (`discard_writes=on`) or a block device is refused.
    static func open(_ config: PmemConfig) throws -> PmemBacking {
        func refuse(_ message: String) -> ConfigError { ConfigError(option: "--pmem", message) }
        let path = config.file
        if FileSystem.isDirectory(path) {
            guard let size = config.size else {
                throw refuse("file=\(path) is a directory: give size= for the file made in it (Cloud Hypervisor: trying to use a directory for pmem but no size specified)")
            }
            try checkSize(size, path: path)
            let file: OwnedFileDescriptor
            do {
                file = try OwnedFileDescriptor.temporaryFile(inDirectory: path)
                try file.truncate(to: Int64(size))
            } catch {
                throw refuse("cannot make a \(size)-byte persistent memory file in the directory \(path): \(error)")
            }
            return PmemBacking(file: file, size: size)
        }
        let file: OwnedFileDescriptor
        let fileSize: UInt64
        do {
            file = try OwnedFileDescriptor(path: path, flags: config.discardWrites ? O_RDONLY : O_RDWR)
            fileSize = UInt64(try file.endOffset())
        } catch {
            throw refuse("cannot open the persistent memory file \(path): \(error)")
        }
        let size = config.size ?? fileSize
        try checkSize(size, path: path)
        if size > fileSize {
            let regular = (try? file.isRegularFile()) ?? false
            guard regular, !config.discardWrites else {
                throw refuse("\(path) holds \(fileSize) bytes, less than size=\(size), and cannot be extended (\(regular ? "discard_writes=on opens it read-only" : "it is not a regular file"))")
            }
            do { try file.truncate(to: Int64(size)) } catch {
                throw refuse("cannot extend \(path) from \(fileSize) to size=\(size) bytes: \(error)")
            }
        }
        return PmemBacking(file: file, size: size)
    }

    /// Refuses an empty size or one that is not a multiple of 2 MiB.
    static func checkSize(_ size: UInt64, path: String) throws(ConfigError) {
        guard size > 0 else { throw ConfigError(option: "--pmem", "\(path) is empty: give size= (a multiple of 2 MiB) or a file of that size") }
        guard size % PmemConfig.sizeAlignment == 0 else {
            throw ConfigError(option: "--pmem", "the size of \(path), \(size) bytes, is not a multiple of 2 MiB: persistent memory comes in 2 MiB steps (Cloud Hypervisor: trying to use a size that is not multiple of 2MiB)")
        }
    }
}

extension VMBuilder {
    /// Attaches one virtio-pmem device (`--pmem file=,size=,discard_writes=`), as Cloud
    /// Hypervisor does: the file is mapped (`MAP_SHARED|MAP_NORESERVE`, or `MAP_PRIVATE` with
    /// `discard_writes=on`) at a 2 MiB-aligned range taken from the top of its segment's 64-bit
    /// window (the allocator its 64-bit BAR then comes from; a restore takes the snapshot's
    /// range), registered as its own memory slot, and the device tells the guest where it is.
    func attachVirtioPmem(_ config: PmemConfig, id: String, context: VirtioAttachContext,
                          bars: inout BARWindows) throws -> AttachedPmem {
        let backing = try PmemBacking.open(config)
        guard var area = bars.mmio64 else {
            throw ConfigError(option: "--pmem", "the machine has no 64-bit device area for \(config.file)")
        }
        let range: AddressRange
        do {
            if let saved = context.placements[id]?.range64, saved.count == 2 {
                guard saved[1] == backing.size else {
                    throw VMMError(description: "the snapshot placed \(id) as \(saved[1]) bytes but \(config.file) has \(backing.size)")
                }
                range = try area.allocate(at: saved[0], size: saved[1])
            } else {
                range = try area.allocate(size: backing.size, alignment: PmemConfig.sizeAlignment, policy: .lastFit)
            }
        } catch {
            throw ConfigError(option: "--pmem", "no room for \(config.file)'s \(backing.size) bytes in the 64-bit device area: \(error)")
        }
        bars.mmio64 = area
        var options: MemoryMapping.Options = [.noReserve]
        if !config.discardWrites { options.insert(.shared) }
        let mapping: MemoryMapping
        do {
            mapping = try MemoryMapping(file: backing.file, size: Int(backing.size), options: options)
        } catch {
            throw VMMError(description: "\(id): cannot map \(config.file) (\(backing.size) bytes): \(error)")
        }
        let slot = (context.vm.memorySlots.map(\.slot).max() ?? 0) + 1
        try context.vm.setMemorySlot(MemorySlot(slot: slot, guestAddress: range.start, size: backing.size, hostAddress: mapping.baseAddress))
        let device = VirtioPmem(start: range.start, size: backing.size, backend: FilePmemBackend(fileDescriptor: backing.file.rawValue))
        let attachment: VirtioPCIAttachment
        let address: String
        do {
            (attachment, address) = try attachVirtio(device, id: id, context: context, bars: &bars, keepOpen: backing.file, slot: config.pci.pciDeviceID, behindIOMMU: config.pci.iommu)
        } catch {
            try? context.vm.removeMemorySlot(slot)
            try? bars.mmio64?.free(range)
            throw error
        }
        logger.info("\(id): \(config.file), \(backing.size) bytes at guest 0x\(String(range.start, radix: 16)) (memory slot \(slot)\(config.discardWrites ? ", writes discarded" : ""))")
        return AttachedPmem(id: id, device: device, attachment: attachment, address: address, range: range, mapping: mapping,
                            slot: slot, vm: context.vm)
    }
}
