import ACPITables
import Arch
import DeviceModel
import Devices
import GuestMemory
import HostSystem
import Interrupts
import BlockStorage
import Hypervisor
import Logging
import PCI
import RateLimiter
import Synchronization
import VMAllocator
import VirtioDevices

/// A VM built from a configuration and ready to run: memory, vCPUs, buses and devices.
///
/// Every member is set once at build time and is itself safe to use from several threads
/// (the VM and vCPUs are used by their owning threads, devices lock their own state).
final class BuiltVM: @unchecked Sendable {
    /// The configuration, with `cpus.boot_vcpus` following vm.resize as Cloud Hypervisor's does.
    var config: VMConfig { configuration.withLock { $0 } }
    private let configuration: Mutex<VMConfig>
    let vm: KVMVirtualMachine
    let memory: GuestMemory
    /// Every vCPU the VM has made, present or ejected.
    let cpus: VCPUSet
    /// The present vCPUs, in order (what a snapshot or migration saves).
    var vcpus: [KVMVCPU] { cpus.present }
    /// The CPU hotplug controller and the Generic Event Device that announces its changes.
    let cpuHotplug: (controller: ACPICPUHotplugController, ged: ACPIGenericEventDevice)
    let pio: Bus
    let mmio: Bus
    let devices: LegacyDevices
    /// The PCI segments, by number (segment 0 first).
    let pciSegments: [PCISegment]
    /// PCI segment 0 (the one the legacy 0xCF8 ports reach).
    var pciSegment: PCISegment { pciSegments[0] }
    let router: GSIRouter
    let virtio: [VirtioPCIAttachment]
    let console: AttachedConsole?
    let nets: [AttachedNet]
    /// The vsock device, when the configuration has one.
    let vsock: AttachedVsock?
    /// The virtio-pmem devices, in configuration order.
    var pmems: [AttachedPmem] = []
    /// The virtio-balloon device, when the configuration has one.
    var balloon: VirtioBalloon?
    /// The 64-bit device area (shared between the PCI segments' 64-bit windows) as (base, size).
    var deviceArea: (base: UInt64, size: UInt64) = (0, 0)
    /// Every device with its id, resources, counters and state, in boot order.
    let deviceManager: DeviceManager
    /// Presses the ACPI power button (through the Generic Event Device).
    let powerButton: (@Sendable () -> Void)?
    let events: EventManager
    let exits: ExitSignal
    /// The CPUID this host gives the VM's vCPUs (vCPU 0's as built), which a live migration
    /// sends as Cloud Hypervisor's `common_cpuid`. Read at build: a vCPU ioctl from another
    /// thread would wait for a running vCPU to leave the guest.
    var commonCPUID: [CPUIDEntry] = []
    /// What hot-adding a PCI device needs (the builder, the attach context, the PCI hotplug
    /// registers and the GED), set by `build()`.
    var pciHotplug: PCIHotplugSupport?
    /// ACPI memory hotplug (`hotplug_method=acpi` with a `hotplug_size`), set by `build()`.
    var memoryHotplug: MemoryHotplugSupport?
    /// virtio-mem memory hotplug (`hotplug_method=virtio-mem` with a `hotplug_size`), set by `build()`.
    var virtioMem: VirtioMemSupport?

    init(config: VMConfig, vm: KVMVirtualMachine, memory: GuestMemory, cpus: VCPUSet,
         cpuHotplug: (controller: ACPICPUHotplugController, ged: ACPIGenericEventDevice), pio: Bus, mmio: Bus,
         devices: LegacyDevices, pciSegments: [PCISegment], router: GSIRouter, virtio: [VirtioPCIAttachment], console: AttachedConsole?,
         nets: [AttachedNet], vsock: AttachedVsock?, deviceManager: DeviceManager, powerButton: (@Sendable () -> Void)?, events: EventManager, exits: ExitSignal) {
        configuration = Mutex(config)
        self.vm = vm
        self.memory = memory
        self.cpus = cpus
        self.cpuHotplug = cpuHotplug
        self.pio = pio
        self.mmio = mmio
        self.devices = devices
        self.pciSegments = pciSegments
        self.router = router
        self.virtio = virtio
        self.console = console
        self.nets = nets
        self.vsock = vsock
        self.deviceManager = deviceManager
        self.powerButton = powerButton
        self.events = events
        self.exits = exits
    }

    /// Records the vCPU count vm.resize asked for (`cpus.boot_vcpus`, which a reboot, a
    /// snapshot or a migration then uses).
    func setBootVCPUs(_ count: Int) {
        configuration.withLock { $0.cpus.bootVCPUs = UInt32(count) }
    }

    /// Records the RAM size vm.resize asked for (`memory.size`, as Cloud Hypervisor's
    /// configuration follows it with ACPI memory hotplug).
    func setMemorySize(_ size: UInt64) {
        configuration.withLock { $0.memory.size = size }
    }

    /// Replaces the configuration after a device was hot-added or removed (a snapshot, a
    /// migration or a reboot then builds the machine as it now is).
    func replaceConfig(_ config: VMConfig) {
        configuration.withLock { $0 = config }
    }
}

/// Builds a VM step by step, each step one short function (Firecracker's builder shape).
struct VMBuilder {
    let hypervisor: KVMHypervisor
    let logger: Logger
    /// The back-end connections a reboot kept from the stopped machine: its vhost-user
    /// devices take them instead of connecting.
    var keptBackends: KeptVhostUserBackends? = nil

    /// What a live migration's destination makes as soon as the configuration arrives, while
    /// the source still runs: the KVM VM with the guest memory registered and the boot vCPUs
    /// configured. None of it holds a host resource the source uses (disks, TAPs, sockets come
    /// with ``build(_:events:exits:restoring:prepared:placements:)`` once the source has let go of them),
    /// so the source's downtime no longer pays for it.
    struct PreparedMachine {
        let vm: KVMVirtualMachine
        let memory: GuestMemory
        let vcpus: [KVMVCPU]
        let commonCPUID: [CPUIDEntry]
        /// The source's memory manager (boot RAM, hot-added regions and their slots).
        let memoryState: MemoryManagerSnapshotData?
    }

    /// Makes the VM, registers `memory` (its boot regions) and creates the boot vCPUs (restoring:
    /// without boot registers); then maps the regions `memoryState` says ACPI memory hotplug
    /// added (from `files`, a local migration's descriptors by region index, when given), whose
    /// KVM slots the build registers after the devices took theirs.
    func prepare(_ config: VMConfig, memory: GuestMemory, memoryState: MemoryManagerSnapshotData? = nil,
                 files: [UInt32: OwnedFileDescriptor] = [:]) throws -> PreparedMachine {
        let vm = try createVM()
        try vm.registerMemory(memory)
        let (vcpus, commonCPUID) = try createBootVCPUs(config, vm: vm, supported: try hypervisor.supportedCPUID(), plan: nil, memory: memory)
        if let memoryState {
            try MemoryHotplugSupport.appendHotAdded(memoryState, to: memory, config: config.memory, files: files)
        }
        return PreparedMachine(vm: vm, memory: memory, vcpus: vcpus, commonCPUID: commonCPUID, memoryState: memoryState)
    }

    /// The memory configuration a machine restored from `memoryState` boots its RAM from: the
    /// source's boot RAM (`memory.size` follows vm.resize, Cloud Hypervisor's `boot_ram` does not).
    static func bootMemory(_ config: MemoryConfig, memoryState: MemoryManagerSnapshotData?) -> MemoryConfig {
        var boot = config
        if let memoryState { boot.size = memoryState.bootRAM }
        return boot
    }

    /// Builds the VM. With `restoring`, nothing is loaded into guest memory and the boot vCPU's
    /// registers are left alone: a snapshot's memory and state replace them.
    /// With `prepared` (a migration's, made when its configuration came; implies `restoring`),
    /// the VM, its memory and its boot vCPUs are those. `placements` (a snapshot's, by device
    /// id) put the devices' BARs and pmem ranges where they were. With `memoryState` (a
    /// snapshot's), the RAM is the snapshot's boot RAM plus the regions ACPI memory hotplug
    /// added, each back in its KVM slot, and the memory hotplug controller is the snapshot's.
    func build(_ config: VMConfig, events: EventManager, exits: ExitSignal, restoring: Bool = false,
               prepared: PreparedMachine? = nil, placements: [String: DevicePlacement] = [:],
               memoryState: MemoryManagerSnapshotData? = nil) throws -> BuiltVM {
        let restoring = restoring || prepared != nil
        let memoryState = prepared?.memoryState ?? memoryState
        let memoryConfig = Self.bootMemory(config.memory, memoryState: memoryState)
        let vm: KVMVirtualMachine
        let memory: GuestMemory
        if let prepared {
            (vm, memory) = (prepared.vm, prepared.memory)
        } else {
            vm = try createVM()
            memory = try createMemory(memoryConfig)
            try vm.registerMemory(memory)
            if let memoryState { try MemoryHotplugSupport.appendHotAdded(memoryState, to: memory, config: memoryConfig) }
        }
        let vcpuCount = Int(config.cpus.bootVCPUs)
        let topology = Self.topology(config.cpus)

        let pio = Bus(name: "I/O port bus")
        let mmio = Bus(name: "MMIO bus")
        var devices = LegacyDevices()
        (devices.serial, devices.serialHost, devices.serialInput) = try LegacyDeviceAttach.attachSerial(config.serial, vm: vm, pio: pio, mmio: mmio, events: events, logger: logger)
        devices.i8042 = try LegacyDeviceAttach.attachI8042(pio: pio, exits: exits)
        // The boot RAM only: a virtio-mem region is not RAM until the guest plugs it.
        let virtioMemRegion = try VirtioMemSupport.region(memoryConfig)
        let hotAdded = try memoryState?.hotAddedMappings().map(\.gpa) ?? []
        let bootRAM = memory.regions.filter { $0.start.rawValue != virtioMemRegion?.start && !hotAdded.contains($0.start.rawValue) }
        let below4G = min(memoryConfig.size, X86Layout.mem32BitReservedStart.rawValue)
        devices.cmos = try LegacyDeviceAttach.attachCMOS(pio: pio, memoryBelow4G: below4G, memoryAbove4G: memoryConfig.size - below4G, exits: exits)
        devices.debugPort = try LegacyDeviceAttach.attachDebugPort(pio: pio, logger: logger)
        devices.acpiShutdown = try LegacyDeviceAttach.attachACPIShutdown(pio: pio, exits: exits)
        devices.pmTimer = try LegacyDeviceAttach.attachPMTimer(pio: pio)

        // The guest's address width (the host's, capped by max_phys_bits) bounds the 64-bit
        // device area above RAM, where pmem ranges go.
        let supported = try hypervisor.supportedCPUID()
        let physicalAddressBits = CPUIDBuilder.physicalAddressBits(supported: supported, maximum: config.cpus.maxPhysBits)
        let ramEnd = bootRAM.map { $0.start.rawValue + $0.size }.max() ?? 0
        let area = try X86Layout.deviceArea(ramEnd: ramEnd, hotplugSize: config.memory.hotplugSize,
                                            virtioMem: config.memory.hotplugMethod == .virtioMem, physicalAddressBits: physicalAddressBits)
        // Each PCI segment gets its ECAM window and its shares of the 32-bit and 64-bit windows.
        let windows = try PCISegmentLayout.plan(weights: config.pciApertureWeights, deviceArea: area)
        var bars = windows.map {
            BARWindows(mmio32: AddressAllocator(name: "PCI segment \($0.id) 32-bit MMIO", pool: $0.mmio32),
                       mmio64: AddressAllocator(name: "PCI segment \($0.id) 64-bit MMIO", pool: $0.mmio64))
        }

        let router = try GSIRouter(vm: vm)
        let mover = BARMover(mmio: mmio, vm: vm, events: events, logger: logger)
        let pciSegments = try attachPCISegments(windows, pio: pio, mmio: mmio, relocation: mover)
        // The 0xCF8 address register: its writes wait in KVM's coalesced ring until the data
        // port's access exits (as QEMU's i440FX/Q35 do), one exit per configuration access
        // instead of two. No write there changes anything but the register, read back only
        // through an exit.
        if try !vm.registerCoalescedPortIO(port: UInt16(PCIConfigIO.portBase), length: 4) {
            logger.debug("KVM has no coalesced port I/O: 0xCF8 writes exit")
        }
        var context = VirtioAttachContext(vm: vm, memory: memory, segment: pciSegments[0], mmio: mmio, router: router, mover: mover, events: events)
        context.placements = placements
        // With a virtual IOMMU, the devices with iommu=on translate through its table.
        let iommuMapping = config.hasVirtualIOMMU ? IommuMapping() : nil
        context.iommu = iommuMapping
        // A device goes on its `pci_segment=` (validated below the segment count) and takes its
        // BAR from that segment's windows.
        func on(_ segment: UInt16) -> VirtioAttachContext { context.on(pciSegments[Int(segment)]) }
        var virtio: [VirtioPCIAttachment] = []
        var managed: [ManagedDevice] = DeviceRegistration.legacy(devices)
        let (rng, rngAddress) = try attachVirtioRng(config.rng, context: on(config.rng.pci.pciSegment), bars: &bars[Int(config.rng.pci.pciSegment)])
        virtio.append(rng)
        managed.append(DeviceRegistration.virtio(id: "_rng", kind: "virtio-rng", attachment: rng, address: rngAddress, mover: mover))
        let console = try attachVirtioConsole(config.console, context: on(config.console.pci.pciSegment),
                                              bars: &bars[Int(config.console.pci.pciSegment)])
        if let console {
            virtio.append(console.attachment)
            managed.append(DeviceRegistration.virtio(id: "_console", kind: "virtio-console", attachment: console.attachment,
                                                     address: console.address, mover: mover))
        }
        // Each disk limiter, a disk's own or a --rate-limit-group's shared one, gets one wake-up
        // timer that serves all the disks it limits.
        var groupLimiters: [String: RateLimiter] = [:]
        for group in config.rateLimitGroups ?? [] { groupLimiters[group.id] = group.rateLimiterConfig.makeLimiter() }
        var limited: [ObjectIdentifier: (name: String, limiter: RateLimiter, members: [(transport: VirtioPCIDevice, queues: Int)])] = [:]
        for (disk, id) in zip(config.disks ?? [], config.diskIDs) {
            if disk.vhostUser {
                let attached = try attachVhostUserBlock(disk, id: id, context: on(disk.pciSegment), bars: &bars[Int(disk.pciSegment)])
                virtio.append(attached.attachment)
                managed.append(DeviceRegistration.removable(DeviceRegistration.vhostUserBlock(attached, socket: disk.vhostSocket ?? "", mover: mover),
                                                            attachment: attached.attachment, context: on(disk.pciSegment)) { _ in attached.device.reset(); attached.device.common.disconnect() })
                continue
            }
            let limiter = disk.rateLimitGroup.flatMap { groupLimiters[$0] } ?? disk.rateLimiterConfig?.makeLimiter()
            let (attachment, address, block, backend) = try attachVirtioBlock(disk, id: id, context: on(disk.pciSegment), bars: &bars[Int(disk.pciSegment)],
                                                                           rateLimiter: limiter)
            virtio.append(attachment)
            managed.append(Self.blockEntry(id: id, attachment: attachment, address: address, block: block, backend: backend,
                                           context: on(disk.pciSegment)))
            if let limiter, !limiter.isUnlimited {
                let name = disk.rateLimitGroup.map { "rate limit group \($0)" } ?? id
                limited[ObjectIdentifier(limiter), default: (name, limiter, [])].members.append((attachment.transport, disk.numQueues))
            }
        }
        for entry in limited.values.sorted(by: { $0.name < $1.name }) {
            let members = entry.members
            try RateLimiterWakeUp.install(entry.limiter, events: events) {
                for member in members { for queue in 0..<member.queues { member.transport.notifyQueue(queue) } }
            }
            logger.info("\(entry.name): rate limited (\(Self.describe(entry.limiter))) for \(members.count) disk(s)")
        }
        var nets: [AttachedNet] = []
        for (net, id) in zip(config.net ?? [], config.netIDs) {
            if net.vhostUser {
                let attached = try attachVhostUserNet(net, id: id, context: on(net.pciSegment), bars: &bars[Int(net.pciSegment)])
                virtio.append(attached.attachment)
                managed.append(DeviceRegistration.removable(DeviceRegistration.vhostUserNet(attached, socket: net.vhostSocket ?? "", mover: mover),
                                                            attachment: attached.attachment, context: on(net.pciSegment)) { _ in attached.device.reset(); attached.device.common.disconnect() })
                continue
            }
            let attached = try attachVirtioNet(net, id: id, context: on(net.pciSegment), bars: &bars[Int(net.pciSegment)])
            virtio.append(attached.attachment)
            let device = attached.device
            let entry = DeviceRegistration.virtio(id: id, kind: "virtio-net", attachment: attached.attachment, address: attached.address,
                                                  mover: mover, counters: { device.counters.dictionary })
            managed.append(DeviceRegistration.removable(entry, attachment: attached.attachment, context: on(net.pciSegment),
                                                        release: DeviceRegistration.netRelease(attached, events: events)))
            nets.append(attached)
        }
        var pmems: [AttachedPmem] = []
        for (pmem, id) in zip(config.pmem ?? [], config.pmemIDs) {
            let attached = try attachVirtioPmem(pmem, id: id, context: on(pmem.pci.pciSegment), bars: &bars[Int(pmem.pci.pciSegment)])
            virtio.append(attached.attachment)
            managed.append(DeviceRegistration.removable(DeviceRegistration.pmem(attached, file: pmem.file, discardWrites: pmem.discardWrites, mover: mover),
                                                        attachment: attached.attachment, context: on(pmem.pci.pciSegment),
                                                        release: DeviceRegistration.pmemRelease(attached)))
            pmems.append(attached)
        }
        for (fs, id) in zip(config.fs ?? [], config.fsIDs) {
            let attached = try attachVirtioFs(fs, id: id, context: on(fs.pci.pciSegment), bars: &bars[Int(fs.pci.pciSegment)])
            virtio.append(attached.attachment)
            managed.append(DeviceRegistration.removableFs(attached, socket: fs.socket, context: on(fs.pci.pciSegment)))
        }
        var vsock: AttachedVsock?
        if let vsockConfig = config.vsock, let id = config.vsockID {
            let attached = try attachVirtioVsock(vsockConfig, id: id, context: on(vsockConfig.pci.pciSegment),
                                                  bars: &bars[Int(vsockConfig.pci.pciSegment)])
            virtio.append(attached.attachment)
            let entry = DeviceRegistration.virtio(id: id, kind: "virtio-vsock", attachment: attached.attachment,
                                                  address: attached.address, mover: mover)
            managed.append(DeviceRegistration.removable(entry, attachment: attached.attachment, context: on(vsockConfig.pci.pciSegment)) { _ in attached.close() })
            vsock = attached
        }
        var balloon: VirtioBalloon?
        if let balloonConfig = config.balloon, let id = config.balloonID {
            let (attachment, address, device) = try attachVirtioBalloon(balloonConfig, id: id, context: on(balloonConfig.pci.pciSegment),
                                                                        bars: &bars[Int(balloonConfig.pci.pciSegment)])
            virtio.append(attachment)
            // No vm.counters entry: Cloud Hypervisor's balloon reports none.
            managed.append(DeviceRegistration.virtio(id: id, kind: "virtio-balloon", attachment: attachment, address: address, mover: mover))
            balloon = device
        }
        var virtioMem: VirtioMemSupport?
        if let virtioMemRegion {
            // Cloud Hypervisor makes it after the vsock device and before the balloon; here the
            // balloon's slot, taken before, stays where earlier builds put it.
            let (attachment, address, support) = try attachVirtioMem(memoryConfig, region: virtioMemRegion, context: context, bars: &bars[0])
            virtio.append(attachment)
            managed.append(DeviceRegistration.virtio(id: VirtioMemSupport.deviceID, kind: "virtio-mem", attachment: attachment, address: address, mover: mover))
            virtioMem = support
        }
        // The virtio-iommu comes last on segment 0, as Cloud Hypervisor adds it after every
        // other PCI device; the VIOT lists what sits behind it.
        var viot: VIOT?
        if let iommuMapping {
            let attached = try attachVirtioIommu(config, mapping: iommuMapping, endpoints: virtio.compactMap(\.iommuEndpoint),
                                                 context: on(0), bars: &bars[0])
            virtio.append(attached.attachment)
            managed.append(DeviceRegistration.iommu(attached, mover: mover))
            viot = attached.viot
        }

        let acpiMemoryHotplug = Self.hasACPIMemoryHotplug(config.memory)
        let ged = try attachGenericEventDevice(vm: vm, mmio: mmio, bars: &bars[0].mmio32, memoryHotplug: acpiMemoryHotplug)
        let cpuHotplugRegion = try bars[0].mmio32.allocate(size: 0x1000, alignment: 0x1000)
        let pciHotplugRegion = try bars[0].mmio32.allocate(size: 0x1000, alignment: 0x1000)
        let memoryHotplugRegion = acpiMemoryHotplug ? try bars[0].mmio32.allocate(size: 0x1000, alignment: 0x1000) : nil
        managed.append(DeviceRegistration.ged(ged.device, description: ged.description))
        let deviceManager = DeviceManager(windows: bars)
        let (pciHotplugController, ejections) = try attachPCIHotplug(mmio: mmio, base: pciHotplugRegion.start, deviceManager: deviceManager)
        managed.append(.stateful(pciHotplugController, id: "pci-hotplug", kind: "acpi-pci-hotplug",
                                 resources: DeviceResources(mmio: [(pciHotplugRegion.start, ACPIPCIHotplugController.registerSize)])))
        for device in managed { try deviceManager.register(device) }

        // The tables describe every possible vCPU (max_vcpus); the boot ones are enabled.
        let apicIDs = (0..<UInt32(config.cpus.maxVCPUs)).map { topology.x2apicID(of: $0) }
        // The CMOS clock raises no interrupt (CMOSRTC emulates none), so its description has no IRQ.
        let rtc = devices.cmos.map { _ in PlatformAML.CMOSRealTimeClock(port: UInt16(CMOSRTC.portBase), length: UInt8(CMOSRTC.portLength)) }
        var plan: BootPlan?
        if !restoring {
            let rsdp = try writeACPITables(memory: memory, apicIDs: apicIDs, serialPort: devices.serial != nil, realTimeClock: rtc,
                                           pciSegments: windows, ged: ged.description,
                                           cpuHotplug: (cpuHotplugRegion.start, vcpuCount), pciHotplug: pciHotplugRegion.start,
                                           memoryHotplug: memoryHotplugRegion?.start, viot: viot)
            let boot = try BootSetup.prepare(payload: config.payload ?? PayloadConfig(), memory: memory, vcpuCount: vcpuCount,
                                             topology: topology, rsdpAddress: rsdp, hotplugRegionStart: virtioMemRegion?.start)
            logger.info("kernel entry \(boot.entry) via the \(boot.bootProtocol)")
            plan = boot
        }

        let (vcpus, commonCPUID) = try prepared.map { ($0.vcpus, $0.commonCPUID) } ?? createBootVCPUs(config, vm: vm, supported: supported, plan: plan, memory: memory)
        let cpus = VCPUSet(boot: vcpus, maxVCPUs: Int(config.cpus.maxVCPUs),
                           configure: vcpuConfigurer(vm: vm, config: config.cpus, topology: topology, supported: supported))
        let controller = try attachCPUHotplug(cpus: cpus, mmio: mmio, base: cpuHotplugRegion.start)
        let built = BuiltVM(config: config, vm: vm, memory: memory, cpus: cpus, cpuHotplug: (controller, ged.device), pio: pio, mmio: mmio, devices: devices,
                            pciSegments: pciSegments, router: router, virtio: virtio, console: console, nets: nets, vsock: vsock,
                            deviceManager: deviceManager,
                            powerButton: { [logger] in
                                do { try ged.device.notify(.powerButton) } catch { logger.error("power button: \(error)") }
                            },
                            events: events, exits: exits)
        built.commonCPUID = commonCPUID
        built.pmems = pmems
        built.balloon = balloon
        built.virtioMem = virtioMem
        built.deviceArea = area
        // Hot-added devices: 64-bit BARs for disks too, and no snapshot placements.
        var hotplugContext = context
        hotplugContext.hotplug = true
        hotplugContext.placements = [:]
        built.pciHotplug = PCIHotplugSupport(builder: self, context: hotplugContext, controller: pciHotplugController, ged: ged.device,
                                              ejections: ejections)
        if let memoryHotplugRegion {
            let hotplug = try attachMemoryHotplug(mmio: mmio, base: memoryHotplugRegion.start, ged: ged.device, vm: vm, memory: memory,
                                                  config: memoryConfig, roomEnd: area.base)
            if let memoryState { try hotplug.restore(memoryState) }
            built.memoryHotplug = hotplug
        }
        return built
    }

    /// Cloud Hypervisor's hardware-reduced ACPI tables at the RSDP address (0xA0000): FADT
    /// with the sleep/reset registers at port 0x600 and the PM timer at 0x608, MADT, DSDT
    /// (which, unlike Cloud Hypervisor's, also describes the CMOS clock so that Linux's
    /// `rtc_cmos` binds to it). Each PCI segment has its MCFG entry and its host bridge, whose
    /// `_CRS` has the segment's shares of the 32-bit device window and of the 64-bit device area.
    /// Returns the RSDP's address for the boot protocol.
    func writeACPITables(memory: GuestMemory, apicIDs: [UInt32], serialPort: Bool, realTimeClock: PlatformAML.CMOSRealTimeClock?,
                         pciSegments: [PCISegmentWindows], ged: PlatformAML.GenericEventDevice,
                         cpuHotplug: (controllerAddress: UInt64, presentVCPUs: Int)? = nil, pciHotplug: UInt64? = nil,
                         memoryHotplug: UInt64? = nil, viot: VIOT? = nil) throws -> GuestAddress {
        var configuration = ACPIConfiguration(apicIDs: apicIDs, serialPort: serialPort)
        configuration.cmosRealTimeClock = realTimeClock
        configuration.genericEventDevice = ged
        configuration.cpuHotplug = cpuHotplug
        configuration.pciHotplugAddress = pciHotplug
        configuration.memoryHotplugAddress = memoryHotplug
        configuration.viot = viot
        configuration.pmTimerPort = UInt16(ACPIPMTimer.portBase)
        configuration.shutdownPort = UInt16(ACPIShutdownDevice.portBase)
        configuration.pciSegments = pciSegments.map(\.mcfg)
        configuration.additionalDefinitions = pciSegments.map { PlatformAML.pciHostBridge($0.hostBridge) }
        let tables = try ACPITableSet.build(configuration, rsdpAddress: X86Layout.rsdpPointer.rawValue)
        for table in tables.tables {
            try memory.write(bytes: table.bytes, at: GuestAddress(table.address))
        }
        return GuestAddress(tables.rsdpAddress)
    }

    /// The GSI of the Generic Event Device's interrupt (a free ISA line, edge-triggered).
    static let gedIRQ: UInt32 = 5

    /// Cloud Hypervisor's ACPI Generic Event Device: a one-byte MMIO register (from the
    /// 32-bit device window) and an edge interrupt on GSI 5; the power button presses it.
    func attachGenericEventDevice(vm: any VirtualMachine, mmio: Bus, bars: inout AddressAllocator, memoryHotplug: Bool = false)
        throws -> (device: ACPIGenericEventDevice, description: PlatformAML.GenericEventDevice) {
        let region = try bars.allocate(size: 0x1000, alignment: 0x1000)
        let device = ACPIGenericEventDevice(interrupt: try IRQFDLine(vm: vm, gsi: Self.gedIRQ))
        try mmio.insert(device, base: region.start, length: ACPIGenericEventDevice.registerSize)
        var events: PlatformAML.GenericEventDevice.Events = [.cpuHotplug, .pciHotplug, .powerButton]
        if memoryHotplug { events.insert(.memoryHotplug) }
        return (device, PlatformAML.GenericEventDevice(address: region.start, irq: Self.gedIRQ, events: events))
    }

    /// The VM with KVM's x86 helpers placed in the reserved hole, the in-kernel irqchip and PIT.
    func createVM() throws -> KVMVirtualMachine {
        let vm = try hypervisor.createKVMVirtualMachine()
        try vm.setIdentityMapAddress(X86Layout.kvmIdentityMapStart.rawValue)
        try vm.setTSSAddress(X86Layout.kvmTSSStart.rawValue)
        try vm.createIRQChip()
        try vm.createPIT()
        return vm
    }

    /// Guest RAM split around the 32-bit hole, with the backing options of `--memory`.
    /// How many regions ``createMemory(_:files:)`` makes for `config` (boot RAM and virtio-mem's).
    static func ramRegionCount(_ config: MemoryConfig) throws -> Int {
        try X86Layout.ramRegions(size: config.size).count + (VirtioMemSupport.region(config) != nil ? 1 : 0)
    }

    func createMemory(_ config: MemoryConfig, files: [UInt32: OwnedFileDescriptor] = [:]) throws -> GuestMemory {
        var options: MemoryMapping.Options = [.noReserve]
        if config.shared { options.insert(.shared) }
        if config.hugepages { options.insert(.hugePages) }
        if config.prefault { options.insert(.populate) }
        var regions = try X86Layout.ramRegions(size: config.size).map { (start: $0.0, size: $0.1) }
        // virtio-mem's whole room is mapped from boot, one more region (outside the E820 map).
        if let hotplug = try VirtioMemSupport.region(config) { regions.append((GuestAddress(hotplug.start), hotplug.size)) }
        // Room for the regions ACPI memory hotplug may add, one per hotplug slot.
        let spare = Self.hasACPIMemoryHotplug(config) ? ACPIMemoryHotplugController.slotCount : 0
        let memory: GuestMemory
        if config.shared && !config.hugepages || !files.isEmpty {
            // Shared memory lives in memory files (memfd), one per region, as Cloud Hypervisor's
            // does: vhost-user back-ends and a local migration's destination map them.
            guard files.isEmpty || files.keys.allSatisfy({ Int($0) < regions.count }) else {
                throw VMMError(description: "memory descriptors name slots \(files.keys.sorted()) but the guest has \(regions.count) memory region(s)")
            }
            var mapped: [GuestMemoryRegion] = []
            for (index, region) in regions.enumerated() {
                let file: OwnedFileDescriptor
                if files.isEmpty {
                    file = try OwnedFileDescriptor.memoryFile(name: "ch_ram\(index)", size: Int64(region.size))
                } else {
                    guard let passed = files[UInt32(index)] else { throw VMMError(description: "no memory descriptor came for memory region \(index)") }
                    guard try passed.size() >= Int64(region.size) else {
                        throw VMMError(description: "the memory descriptor of region \(index) holds \(try passed.size()) bytes, the region needs \(region.size)")
                    }
                    file = passed
                }
                let mapping = try MemoryMapping(file: file, size: Int(region.size), options: options.union(.shared))
                mapped.append(try GuestMemoryRegion(start: region.start, mapping: mapping))
            }
            memory = try GuestMemory(regions: mapped, spareRegions: spare)
        } else {
            memory = try GuestMemory.anonymous(regions, options: options, spareRegions: spare)
        }
        if config.mergeable {
            for region in memory.regions { try region.mapping.advise(offset: 0, length: region.mapping.size, advice: 12 /* MADV_MERGEABLE */) }
        }
        for region in memory.regions { TransparentHugePages.apply(config, to: region.mapping, logger: logger) }
        return memory
    }

    /// The boot vCPUs, configured (the first with `plan`'s entry registers when booting), and
    /// the CPUID the first one got (the guest's, which a migration's destination checks).
    /// `supported` is the host's CPUID (`KVM_GET_SUPPORTED_CPUID`), read once by the caller.
    func createBootVCPUs(_ config: VMConfig, vm: KVMVirtualMachine, supported: [CPUIDEntry], plan: BootPlan?,
                         memory: GuestMemory) throws -> ([KVMVCPU], [CPUIDEntry]) {
        let topology = Self.topology(config.cpus)
        let physicalAddressBits = CPUIDBuilder.physicalAddressBits(supported: supported, maximum: config.cpus.maxPhysBits)
        var commonCPUID: [CPUIDEntry] = []
        var vcpus: [KVMVCPU] = []
        for id in 0..<config.cpus.bootVCPUs {
            // The KVM vCPU id is the initial APIC id, which the topology may spread out.
            let vcpu = try vm.createKVMVCPU(id: topology.x2apicID(of: id))
            try configureVCPU(vcpu, id: id, count: Int(config.cpus.maxVCPUs), topology: topology, supported: supported, maxPhysBits: physicalAddressBits,
                              nested: config.cpus.nested)
            if id == 0, let plan { try configureBootVCPU(vcpu, plan: plan, memory: memory) }
            if id == 0 { commonCPUID = try vcpu.cpuid() }
            vcpus.append(vcpu)
        }
        return (vcpus, commonCPUID)
    }

    static func topology(_ cpus: CpusConfig) -> CPUTopology {
        if let t = cpus.topology {
            return CPUTopology(threadsPerCore: UInt16(t.threadsPerCore), coresPerDie: UInt16(t.coresPerDie),
                               diesPerPackage: UInt16(t.diesPerPackage), packages: UInt16(t.packages))
        }
        // The topology describes every vCPU the VM may have (max_vcpus), as Cloud Hypervisor's does.
        return .flat(vcpus: UInt16(cpus.maxVCPUs))
    }

    /// CPUID, MSRs, FPU and the LAPIC's LINT0/LINT1 wiring, for every vCPU; `maxPhysBits` is
    /// the guest's physical address width (see `CPUIDBuilder.physicalAddressBits`).
    func configureVCPU(_ vcpu: KVMVCPU, id: UInt32, count: Int, topology: CPUTopology, supported: [CPUIDEntry], maxPhysBits: UInt8,
                       nested: Bool = true) throws {
        let tscDeadline = hypervisor.checkExtension(72 /* KVM_CAP_TSC_DEADLINE_TIMER */) > 0
        let cpuid = try CPUIDBuilder.build(supported: supported, vcpuID: id, topology: topology, totalVCPUs: UInt32(count),
                                           options: CPUIDOptions(tscDeadline: tscDeadline, physicalAddressBits: maxPhysBits,
                                                                 nestedVirtualization: nested))
        try vcpu.setCPUID(cpuid)
        try vcpu.setMSRs(X86BootCPU.bootMSRs())
        try vcpu.setFPU(X86BootCPU.bootFPU())
        var lapic = try vcpu.lapic()
        X86BootCPU.configureLocalInterrupts(&lapic)
        try vcpu.setLAPIC(lapic)
    }

    /// The boot vCPU's registers for entering the kernel (application processors wait for
    /// INIT/SIPI from the guest, handled by the in-kernel LAPIC).
    func configureBootVCPU(_ vcpu: KVMVCPU, plan: BootPlan, memory: GuestMemory) throws {
        let state = try X86BootCPU.bootState(for: plan.bootProtocol, entry: plan.entry, memory: memory, base: vcpu.specialRegisters())
        try vcpu.setSpecialRegisters(state.specialRegisters)
        try vcpu.setRegisters(state.registers)
    }
}
