import Arch
import DeviceModel
import Devices
import Hypervisor

extension VMBuilder {
    /// Cloud Hypervisor's CPU hotplug controller on the MMIO bus at `base` (a page of the
    /// 32-bit device window, described by the DSDT's `\_SB_.PRES`): it reports the present
    /// vCPUs of `cpus` and, when the guest ejects one, stops its thread.
    func attachCPUHotplug(cpus: VCPUSet, mmio: Bus, base: UInt64) throws -> ACPICPUHotplugController {
        let controller = ACPICPUHotplugController(maxVCPUs: cpus.maxVCPUs, presentVCPUs: cpus.presentCount) { [logger] id in
            logger.info("the guest ejected vCPU \(id)")
            cpus.eject(id)
        }
        try mmio.insert(controller, base: base, length: ACPICPUHotplugController.registerSize)
        return controller
    }

    /// How a hotplugged vCPU is made (or an ejected one set up again): as a boot vCPU other
    /// than the first, waiting for the guest's INIT/SIPI, with the KVM id of its APIC id.
    func vcpuConfigurer(vm: KVMVirtualMachine, config: CpusConfig, topology: CPUTopology, supported: [CPUIDEntry]) -> VCPUSet.Configure {
        let builder = self
        return { id, existing in
            let vcpu = try existing ?? vm.createKVMVCPU(id: topology.x2apicID(of: id))
            try builder.configureVCPU(vcpu, id: id, count: Int(config.maxVCPUs), topology: topology, supported: supported,
                                      maxPhysBits: config.maxPhysBits, nested: config.nested)
            return vcpu
        }
    }
}
