import Arch
import GuestMemory
import Hypervisor

/// What an arm64 guest is made of, in the terms the arm64 boot path needs.
public struct ARM64MachineSpec: Sendable {
    /// vCPUs at boot.
    public var vcpuCount: Int
    /// RAM in bytes (`AArch64Layout.ramRegions` places it).
    public var memorySize: UInt64
    /// The arm64 `Image` file's bytes.
    public var kernel: [UInt8]
    /// The initramfs's bytes, if any.
    public var initramfs: [UInt8]?
    /// The kernel command line.
    public var commandLine: String
    /// Whether the vCPUs get a PMU (described in the device tree, its interrupt set per vCPU).
    public var pmu = false
    /// PCI segments (host bridges), 1 or more.
    public var pciSegmentCount = 1
    /// NUMA nodes for the device tree; fewer than two describes none.
    public var numaNodes: [ARM64DeviceTree.NUMANode] = []

    /// A machine with one PCI segment, no PMU and no NUMA.
    public init(vcpuCount: Int, memorySize: UInt64, kernel: [UInt8], initramfs: [UInt8]? = nil, commandLine: String) {
        self.vcpuCount = vcpuCount
        self.memorySize = memorySize
        self.kernel = kernel
        self.initramfs = initramfs
        self.commandLine = commandLine
    }
}

/// Where the arm64 boot path put everything.
public struct ARM64BootLayout: Sendable {
    /// The kernel's entry (the boot vCPU's PC).
    public var entry: GuestAddress
    /// The device tree's address (the boot vCPU's x0).
    public var deviceTreeAddress: GuestAddress
    /// The device tree blob written there.
    public var deviceTree: [UInt8]
    /// The initramfs's guest range.
    public var initramfs: (start: GuestAddress, size: UInt64)?
    /// Each vCPU's MPIDR_EL1, as KVM reported it.
    public var mpidrs: [UInt64]
    /// The vGIC the VM was given.
    public var gic: ARM64GICConfiguration
}

/// Failures of the arm64 boot path, each naming the step.
public enum ARM64BuildError: Error, CustomStringConvertible, Sendable {
    /// A hypervisor call failed.
    case hypervisor(step: String, HypervisorError)
    /// The arm64 layout, `Image` or device tree refused its input.
    case arch(step: String, AArch64Error)
    /// Guest memory refused a write.
    case memory(step: String, GuestMemoryError)
    /// The specification does not make a machine.
    case invalid(String)

    /// A sentence naming the step and the cause.
    public var description: String {
        switch self {
        case .hypervisor(let step, let error): return "arm64 boot: \(step): \(error)"
        case .arch(let step, let error): return "arm64 boot: \(step): \(error)"
        case .memory(let step, let error): return "arm64 boot: \(step): \(error)"
        case .invalid(let reason): return "arm64 boot: \(reason)"
        }
    }
}

/// The VMM's arm64 boot path, composed from the `Arch` AArch64 parts and the hypervisor's
/// arm64 protocols (Cloud Hypervisor's `arch::aarch64::configure_system` and
/// `configure_vcpu`): vCPU init with the host's preferred target, the `Image` and
/// initramfs in RAM, the device tree from the vCPUs' real MPIDRs, the GICv3 with its ITS,
/// the PMU, and the boot registers (x0 = device tree, PC = entry, PSTATE = EL1h with DAIF
/// masked; secondary vCPUs powered off until PSCI `CPU_ON`).
///
/// It runs against `ARM64VirtualMachine`/`ARM64VirtualCPU`, so it is tested on any host with
/// a recording fake; the KVM backend conforms on arm64 hosts.
public enum ARM64MachineBuilder {
    /// The highest guest physical address the PCI 64-bit windows reach (a 40-bit IPA space,
    /// what every arm64 KVM host offers).
    public static let deviceAreaEnd: UInt64 = 1 << 40

    /// The RAM regions to map for `spec`.
    public static func memoryRegions(for spec: ARM64MachineSpec) throws(ARM64BuildError) -> [(start: GuestAddress, size: UInt64)] {
        do {
            return try AArch64Layout.ramRegions(size: spec.memorySize)
        } catch {
            throw .arch(step: "laying out \(spec.memorySize) bytes of RAM", error)
        }
    }

    /// The PCI host bridges: ECAM windows one after another from `pciMMConfigStart`, the 64-bit
    /// space between the end of RAM (rounded up to 1 GiB) and `deviceAreaEnd` cut into equal
    /// 4 GiB-aligned windows.
    public static func pciSegments(count: Int, ramEnd: UInt64) throws(ARM64BuildError) -> [ARM64DeviceTree.PCISegment] {
        let maxSegments = Int(AArch64Layout.pciMMConfigSize / AArch64Layout.pciMMConfigSizePerSegment)
        guard (1...maxSegments).contains(count) else {
            throw .invalid("\(count) PCI segments: between 1 and \(maxSegments) fit the ECAM window")
        }
        let start = (ramEnd + (1 << 30) - 1) & ~((1 << 30) - 1)
        guard start < deviceAreaEnd else { throw .invalid("RAM ends at 0x\(String(ramEnd, radix: 16)), beyond the device area") }
        let share = (deviceAreaEnd - start) / UInt64(count) & ~((4 << 30) - 1)
        guard share > 0 else { throw .invalid("no room for \(count) PCI 64-bit windows above RAM") }
        return (0..<count).map { index in
            ARM64DeviceTree.PCISegment(
                id: UInt16(index),
                ecamAddress: GuestAddress(AArch64Layout.pciMMConfigStart.rawValue + UInt64(index) * AArch64Layout.pciMMConfigSizePerSegment),
                mmio64Start: GuestAddress(start + UInt64(index) * share), mmio64Size: share)
        }
    }

    /// Sets up the VM for boot: `vcpus` are the VM's vCPUs, already created, in id order;
    /// `memory` is mapped from `memoryRegions(for:)` and registered with the VM.
    public static func configure(_ spec: ARM64MachineSpec, vm: any ARM64VirtualMachine, vcpus: [any ARM64VirtualCPU],
                                 memory: GuestMemory) throws(ARM64BuildError) -> ARM64BootLayout {
        guard spec.vcpuCount >= 1, spec.vcpuCount <= AArch64Layout.maxVCPUs else {
            throw .invalid("\(spec.vcpuCount) vCPUs: arm64 guests have 1 to \(AArch64Layout.maxVCPUs)")
        }
        guard vcpus.count == spec.vcpuCount else {
            throw .invalid("\(vcpus.count) vCPUs were created for a machine of \(spec.vcpuCount)")
        }
        let regions = try memoryRegions(for: spec)
        let ramEnd = regions.last.map { $0.start.rawValue + $0.size } ?? 0

        // 1. vCPU init: the host's preferred target, PSCI 0.2, the PMU, secondaries powered off.
        let target = try hypervisor("asking KVM for the preferred vCPU target") { () throws(HypervisorError) in try vm.preferredTarget() }
        var mpidrs: [UInt64] = []
        for (index, vcpu) in vcpus.enumerated() {
            try hypervisor("initialising vCPU \(index)") { () throws(HypervisorError) in
                try vcpu.initialize(target: target, features: KVMARM64.vcpuFeatures(vcpu: index, pmu: spec.pmu))
            }
            mpidrs.append(try hypervisor("reading vCPU \(index)'s MPIDR_EL1") { () throws(HypervisorError) in try vcpu.mpidr() })
        }

        // 2. The kernel and the initramfs.
        let kernel = try arch("loading the kernel Image") { () throws(AArch64Error) in
            try ARM64ImageLoader.load(spec.kernel, into: memory)
        }
        var initramfs: (start: GuestAddress, size: UInt64)?
        if let image = spec.initramfs {
            let start = try arch("placing the initramfs") { () throws(AArch64Error) in
                try AArch64Layout.initramfsAddress(size: UInt64(image.count), ramEnd: GuestAddress(ramEnd), lowest: kernel.loadEnd)
            }
            do {
                try memory.write(bytes: image, at: start)
            } catch {
                throw .memory(step: "writing the initramfs at \(start)", error)
            }
            initramfs = (start, UInt64(image.count))
        }

        // 3. The device tree.
        var tree = ARM64DeviceTree.Configuration(memory: regions, mpidrs: mpidrs, commandLine: spec.commandLine,
                                                 initramfs: initramfs)
        tree.pmu = spec.pmu
        tree.pciSegments = try pciSegments(count: spec.pciSegmentCount, ramEnd: ramEnd)
        tree.numaNodes = spec.numaNodes
        let blob = try arch("building the device tree") { () throws(AArch64Error) in try ARM64DeviceTree.build(tree) }
        do {
            try memory.write(bytes: blob, at: AArch64Layout.fdtStart)
        } catch {
            throw .memory(step: "writing the device tree at \(AArch64Layout.fdtStart)", error)
        }

        // 4. The GICv3 and its ITS (after every vCPU exists), then the PMUs.
        let redistributors = try arch("placing the GIC redistributors") { () throws(AArch64Error) in
            try AArch64Layout.gicRedistributorRegion(vcpuCount: spec.vcpuCount)
        }
        let its = try arch("placing the GIC ITS") { () throws(AArch64Error) in try AArch64Layout.gicITSRegion(vcpuCount: spec.vcpuCount) }
        let gic = ARM64GICConfiguration(distributorAddress: AArch64Layout.gicDistributorStart.rawValue,
                                        redistributorAddress: redistributors.start.rawValue,
                                        itsAddress: its.start.rawValue, interruptCount: AArch64Layout.irqCount)
        try hypervisor("creating the GICv3") { () throws(HypervisorError) in try vm.createGICv3(gic) }
        if spec.pmu {
            for (index, vcpu) in vcpus.enumerated() {
                try hypervisor("initialising vCPU \(index)'s PMU") { () throws(HypervisorError) in
                    try vcpu.initializePMU(interrupt: ARM64DeviceTree.pmuPPI + 16)
                }
            }
        }

        // 5. Boot registers: every vCPU in EL1h with DAIF masked; the boot vCPU enters the kernel
        //    with the device tree's address in x0 (x1-x3 stay 0 from the init).
        for (index, vcpu) in vcpus.enumerated() {
            try hypervisor("setting vCPU \(index)'s boot registers") { () throws(HypervisorError) in
                try vcpu.setOneRegister(KVMARM64.corePSTATE, KVMARM64.bootPSTATE)
                if index == 0 {
                    try vcpu.setOneRegister(KVMARM64.corePC, kernel.entry.rawValue)
                    try vcpu.setOneRegister(KVMARM64.coreX(0), AArch64Layout.fdtStart.rawValue)
                }
            }
        }
        return ARM64BootLayout(entry: kernel.entry, deviceTreeAddress: AArch64Layout.fdtStart, deviceTree: blob,
                               initramfs: initramfs, mpidrs: mpidrs, gic: gic)
    }

    static func hypervisor<T>(_ step: String, _ body: () throws(HypervisorError) -> T) throws(ARM64BuildError) -> T {
        do { return try body() } catch { throw .hypervisor(step: step, error) }
    }

    static func arch<T>(_ step: String, _ body: () throws(AArch64Error) -> T) throws(ARM64BuildError) -> T {
        do { return try body() } catch { throw .arch(step: step, error) }
    }
}
