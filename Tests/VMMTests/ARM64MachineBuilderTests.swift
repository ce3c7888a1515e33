import Arch
import GuestMemory
import HostSystem
import Hypervisor
import Synchronization
import Testing
@testable import VMM

/// An arm64 VM that records the calls the boot path makes.
final class RecordingARM64VM: ARM64VirtualMachine, @unchecked Sendable {
    let calls = Mutex<[String]>([])
    var gic: ARM64GICConfiguration?
    var failGIC = false
    var memorySlots: [MemorySlot] { [] }
    func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError) {}
    func removeMemorySlot(_ slot: UInt32) throws(HypervisorError) {}
    func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU { RecordingARM64VCPU(id: id, vm: self) }
    func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD?) throws(HypervisorError) {}
    func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError) {}
    func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError) {}
    func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError) {}
    func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError) {}
    func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64] { [] }
    func preferredTarget() throws(HypervisorError) -> UInt32 {
        calls.withLock { $0.append("target") }
        return 5   // KVM_ARM_TARGET_GENERIC_V8
    }
    func createGICv3(_ configuration: ARM64GICConfiguration) throws(HypervisorError) {
        if failGIC { throw .invalidArgument("no vGICv3 on this fake host") }
        calls.withLock { $0.append("gic") }
        gic = configuration
    }
}

/// An arm64 vCPU that keeps its registers in a table (MPIDR as KVM resets it).
final class RecordingARM64VCPU: ARM64VirtualCPU, @unchecked Sendable {
    struct NoKick: VCPUKicker { func kick() {} }
    let id: UInt32
    let vm: RecordingARM64VM
    var registers: [UInt64: UInt64] = [:]
    var features: [KVMARM64.VCPUFeature]?
    var pmuInterrupt: UInt32?
    init(id: UInt32, vm: RecordingARM64VM) {
        self.id = id
        self.vm = vm
    }
    var kicker: any VCPUKicker { NoKick() }
    func run() throws(HypervisorError) -> VCPUExit { throw .invalidArgument("this fake does not run") }
    func initialize(target: UInt32, features: [KVMARM64.VCPUFeature]) throws(HypervisorError) {
        guard target == 5 else { throw .invalidArgument("target \(target)") }
        vm.calls.withLock { $0.append("init \(id)") }
        self.features = features
        registers[KVMARM64.mpidrEL1] = ARM64DeviceTree.defaultMPIDR(Int(id))
    }
    func oneRegister(_ id: UInt64) throws(HypervisorError) -> UInt64 {
        guard features != nil else { throw .invalidArgument("register access before KVM_ARM_VCPU_INIT") }
        return registers[id] ?? 0
    }
    func setOneRegister(_ id: UInt64, _ value: UInt64) throws(HypervisorError) {
        guard features != nil else { throw .invalidArgument("register access before KVM_ARM_VCPU_INIT") }
        registers[id] = value
    }
    func initializePMU(interrupt: UInt32) throws(HypervisorError) {
        guard vm.gic != nil else { throw .invalidArgument("PMU before the vGIC") }
        vm.calls.withLock { $0.append("pmu \(id)") }
        pmuInterrupt = interrupt
    }
}

/// A minimal arm64 Image: the 64-byte header (text_offset 0, image_size, 4 KiB pages) and code.
func tinyARM64Image(imageSize: UInt64 = 0x20_0000) -> [UInt8] {
    var image = [UInt8](repeating: 0, count: 4096)
    func put(_ value: UInt64, at offset: Int, count: Int) {
        for byte in 0..<count { image[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * byte)) }
    }
    put(0x1400_0010, at: 0, count: 4)   // b +0x40
    put(imageSize, at: 16, count: 8)
    put(0b1010, at: 24, count: 8)       // 4 KiB pages, anywhere in RAM
    put(0x644D_5241, at: 56, count: 4)
    return image
}

@Suite("arm64 builder path (fake arm64 VM and vCPUs)")
struct ARM64MachineBuilderTests {
    func machine(vcpus: Int, pmu: Bool = false, initramfs: Bool = true) throws
        -> (spec: ARM64MachineSpec, vm: RecordingARM64VM, vcpus: [RecordingARM64VCPU], memory: GuestMemory) {
        var spec = ARM64MachineSpec(vcpuCount: vcpus, memorySize: 256 << 20, kernel: tinyARM64Image(),
                                    initramfs: initramfs ? [UInt8](repeating: 0xA5, count: 100_000) : nil,
                                    commandLine: "console=ttyAMA0")
        spec.pmu = pmu
        let vm = RecordingARM64VM()
        let cpus = try (0..<vcpus).map { try #require(try vm.createVCPU(id: UInt32($0)) as? RecordingARM64VCPU) }
        let memory = try GuestMemory.anonymous(try ARM64MachineBuilder.memoryRegions(for: spec), options: [.noReserve])
        return (spec, vm, cpus, memory)
    }

    @Test("Boot registers, vCPU features, the device tree and the GIC land where the arm64 boot protocol wants them")
    func composesABootableMachine() throws {
        let (spec, vm, vcpus, memory) = try machine(vcpus: 4, pmu: true)
        let layout = try ARM64MachineBuilder.configure(spec, vm: vm, vcpus: vcpus, memory: memory)
        #expect(vm.calls.withLock { $0 } == ["target", "init 0", "init 1", "init 2", "init 3", "gic",
                                             "pmu 0", "pmu 1", "pmu 2", "pmu 3"])
        #expect(vcpus[0].features == [.psci0_2, .pmuV3])
        #expect(vcpus[3].features == [.psci0_2, .pmuV3, .powerOff])
        #expect(vcpus[2].pmuInterrupt == 23)
        // The boot vCPU: PC at the Image (text_offset 0 above the 2 MiB-aligned kernel base), x0 at the DTB.
        #expect(layout.entry == AArch64Layout.kernelStart)
        #expect(vcpus[0].registers[KVMARM64.corePC] == AArch64Layout.kernelStart.rawValue)
        #expect(vcpus[0].registers[KVMARM64.coreX(0)] == AArch64Layout.fdtStart.rawValue)
        for vcpu in vcpus { #expect(vcpu.registers[KVMARM64.corePSTATE] == 0x3C5) }
        #expect(vcpus[1].registers[KVMARM64.corePC] == nil, "secondaries wait for PSCI CPU_ON")
        // The blob in guest memory is the one returned, made from the vCPUs' MPIDRs.
        #expect(try memory.readBytes(count: layout.deviceTree.count, at: AArch64Layout.fdtStart) == layout.deviceTree)
        #expect(Array(layout.deviceTree.prefix(4)) == [0xD0, 0x0D, 0xFE, 0xED])
        #expect(layout.mpidrs == (0..<4).map(ARM64DeviceTree.defaultMPIDR))
        #expect(try memory.readBytes(count: 64, at: layout.entry) == Array(spec.kernel.prefix(64)))
        // The initramfs sits at the top of RAM, intact.
        let initramfs = try #require(layout.initramfs)
        #expect(initramfs.start.rawValue + ((initramfs.size + 4095) & ~4095) == AArch64Layout.ramStart.rawValue + (256 << 20))
        #expect(try memory.readBytes(count: Int(initramfs.size), at: initramfs.start) == spec.initramfs)
        // The vGIC: distributor, redistributors for 4 vCPUs, the ITS below them.
        let redistributors = try AArch64Layout.gicRedistributorRegion(vcpuCount: 4)
        #expect(vm.gic == layout.gic)
        #expect(layout.gic.distributorAddress == AArch64Layout.gicDistributorStart.rawValue)
        #expect(layout.gic.redistributorAddress == redistributors.start.rawValue)
        #expect(layout.gic.itsAddress == redistributors.start.rawValue - AArch64Layout.gicITSSize)
        #expect(layout.gic.interruptCount == 256)
    }

    @Test("Without a PMU the vCPUs get none, and a single vCPU boots alone")
    func singleVCPUWithoutPMU() throws {
        let (spec, vm, vcpus, memory) = try machine(vcpus: 1, initramfs: false)
        let layout = try ARM64MachineBuilder.configure(spec, vm: vm, vcpus: vcpus, memory: memory)
        #expect(vm.calls.withLock { $0 } == ["target", "init 0", "gic"])
        #expect(vcpus[0].features == [.psci0_2])
        #expect(layout.initramfs == nil)
    }

    @Test("PCI segments share the 64-bit space above RAM and sit side by side in the ECAM window")
    func pciSegments() throws {
        let segments = try ARM64MachineBuilder.pciSegments(count: 3, ramEnd: 0x1_4000_0000)
        #expect(segments.map(\.id) == [0, 1, 2])
        #expect(segments.map(\.ecamAddress.rawValue) == [0x3000_0000, 0x3010_0000, 0x3020_0000])
        #expect(segments[0].mmio64Start.rawValue == 0x1_4000_0000)
        for (left, right) in zip(segments, segments.dropFirst()) {
            #expect(left.mmio64Start.rawValue + left.mmio64Size == right.mmio64Start.rawValue)
        }
        #expect(segments.allSatisfy { $0.mmio64Size.isMultiple(of: 4 << 30) && $0.mmio64Size > 0 })
        #expect(segments[2].mmio64Start.rawValue + segments[2].mmio64Size <= ARM64MachineBuilder.deviceAreaEnd)
        #expect(throws: ARM64BuildError.self) { try ARM64MachineBuilder.pciSegments(count: 0, ramEnd: 0x8000_0000) }
        #expect(throws: ARM64BuildError.self) { try ARM64MachineBuilder.pciSegments(count: 300, ramEnd: 0x8000_0000) }
    }

    @Test("Failures name the step: a refused GIC, a bad Image, a vCPU count that does not match")
    func failuresNameTheStep() throws {
        var (spec, vm, vcpus, memory) = try machine(vcpus: 2)
        vm.failGIC = true
        do {
            _ = try ARM64MachineBuilder.configure(spec, vm: vm, vcpus: vcpus, memory: memory)
            Issue.record("a refused GIC went unnoticed")
        } catch {
            #expect(error.description.contains("creating the GICv3") && error.description.contains("no vGICv3"))
        }
        (spec, vm, vcpus, memory) = try machine(vcpus: 2)
        spec.kernel[56] = 0
        do {
            _ = try ARM64MachineBuilder.configure(spec, vm: vm, vcpus: vcpus, memory: memory)
            Issue.record("an Image without its magic loaded")
        } catch {
            #expect(error.description.contains("loading the kernel Image"))
        }
        (spec, vm, vcpus, memory) = try machine(vcpus: 2)
        do {
            _ = try ARM64MachineBuilder.configure(spec, vm: vm, vcpus: [vcpus[0]], memory: memory)
            Issue.record("a missing vCPU went unnoticed")
        } catch {
            #expect(error.description.contains("1 vCPUs were created for a machine of 2"))
        }
    }
}
