// The ioctl request numbers the allow-lists accept. KVM's come from <linux/kvm.h> through
// CLinux; the others are _IO* macros Swift cannot expand, spelled out with their header.
import CLinux

/// ioctl request numbers per thread kind.
enum Ioctl {
    // include/uapi/asm-generic/ioctls.h
    static let TCGETS: UInt64 = 0x5401
    static let TCSETS: UInt64 = 0x5402
    static let TCSETSW: UInt64 = 0x5403
    static let TCSETSF: UInt64 = 0x5404
    static let TIOCGWINSZ: UInt64 = 0x5413
    static let TIOCGPTN: UInt64 = 0x8004_5430
    static let TIOCSPTLCK: UInt64 = 0x4004_5431
    static let FIONBIO: UInt64 = 0x5421
    static let FIOCLEX: UInt64 = 0x5451
    // include/uapi/linux/if_tun.h
    static let TUNSETIFF: UInt64 = 0x4004_54CA
    static let TUNGETIFF: UInt64 = 0x8004_54D2
    static let TUNSETOFFLOAD: UInt64 = 0x4004_54D0
    static let TUNSETVNETHDRSZ: UInt64 = 0x4004_54D8
    static let TUNGETFEATURES: UInt64 = 0x8004_54CF
    static let TUNSETQUEUE: UInt64 = 0x4004_54D9
    // include/uapi/linux/sockios.h
    static let SIOCGIFFLAGS: UInt64 = 0x8913
    static let SIOCSIFFLAGS: UInt64 = 0x8914
    static let SIOCSIFADDR: UInt64 = 0x8916
    static let SIOCSIFNETMASK: UInt64 = 0x891C
    static let SIOCGIFMTU: UInt64 = 0x8921
    static let SIOCSIFMTU: UInt64 = 0x8922
    static let SIOCSIFHWADDR: UInt64 = 0x8924
    static let SIOCGIFHWADDR: UInt64 = 0x8927

    private static func kvm(_ values: UInt...) -> [UInt64] { values.map { UInt64($0) } }

    /// What a vCPU thread asks of its own vCPU: run it, and read or write its state.
    static var vcpuRuntime: [UInt64] {
        kvm(IOCTL_KVM_RUN, IOCTL_KVM_GET_REGS, IOCTL_KVM_SET_REGS, IOCTL_KVM_GET_SREGS, IOCTL_KVM_SET_SREGS,
            IOCTL_KVM_GET_FPU, IOCTL_KVM_SET_FPU, IOCTL_KVM_GET_MSRS, IOCTL_KVM_SET_MSRS, IOCTL_KVM_GET_LAPIC,
            IOCTL_KVM_SET_LAPIC, IOCTL_KVM_GET_MP_STATE, IOCTL_KVM_SET_MP_STATE, IOCTL_KVM_GET_VCPU_EVENTS,
            IOCTL_KVM_SET_VCPU_EVENTS, IOCTL_KVM_GET_XCRS, IOCTL_KVM_SET_XCRS, IOCTL_KVM_GET_CPUID2,
            IOCTL_KVM_NMI)
    }

    /// VM ioctls that device emulation makes on the vCPU thread whose exit reached it:
    /// ioeventfds follow a moved BAR, MSI-X table writes reprogram the routes, legacy
    /// devices raise their lines, the serial port's transmit register enters or leaves the
    /// coalesced ring; and the tap's offloads, which virtio-net sets when the driver's
    /// DRIVER_OK write activates it.
    static var deviceFromVCPU: [UInt64] {
        kvm(IOCTL_KVM_IOEVENTFD, IOCTL_KVM_IRQFD, IOCTL_KVM_SET_GSI_ROUTING, IOCTL_KVM_IRQ_LINE, IOCTL_KVM_SIGNAL_MSI)
            + serialCoalescing + [TUNSETOFFLOAD]
    }

    /// The device event loop: legacy lines and MSIs it raises directly, the serial port's
    /// coalesced zone (its drain timer removes it after a quiet spell, and a write it drains
    /// may register it again), the tap's offloads (the virtio-net driver's choice), the
    /// terminal's size for the virtio console.
    static var eventLoop: [UInt64] {
        kvm(IOCTL_KVM_IRQ_LINE, IOCTL_KVM_SIGNAL_MSI) + serialCoalescing + [TUNSETOFFLOAD, TIOCGWINSZ]
    }

    /// The serial port's transmit register entering and leaving KVM's coalesced ring (the VMM
    /// thread, which holds these lists too, registers the 0xCF8 zone with them at build time).
    private static var serialCoalescing: [UInt64] {
        kvm(IOCTL_KVM_REGISTER_COALESCED_MMIO, IOCTL_KVM_UNREGISTER_COALESCED_MMIO)
    }

    /// The VMM thread: everything the KVM backend does to create and set up a VM and its
    /// vCPUs, terminals and pseudo-terminals, and tap devices.
    static var vmm: [UInt64] {
        let system = kvm(IOCTL_KVM_GET_API_VERSION, IOCTL_KVM_CREATE_VM, IOCTL_KVM_CHECK_EXTENSION,
                         IOCTL_KVM_GET_VCPU_MMAP_SIZE, IOCTL_KVM_GET_SUPPORTED_CPUID, IOCTL_KVM_GET_EMULATED_CPUID,
                         IOCTL_KVM_GET_MSR_INDEX_LIST, IOCTL_KVM_GET_MSR_FEATURE_INDEX_LIST)
        let vm = kvm(IOCTL_KVM_CREATE_VCPU, IOCTL_KVM_SET_USER_MEMORY_REGION, IOCTL_KVM_SET_TSS_ADDR,
                     IOCTL_KVM_SET_IDENTITY_MAP_ADDR, IOCTL_KVM_CREATE_IRQCHIP, IOCTL_KVM_CREATE_PIT2,
                     IOCTL_KVM_ENABLE_CAP, IOCTL_KVM_GET_DIRTY_LOG)
        let vcpuSetup = kvm(IOCTL_KVM_SET_CPUID2, IOCTL_KVM_SET_GUEST_DEBUG)
        // Snapshot and restore: the vCPU and VM state beyond what KVM_RUN's neighbours touch.
        let state = kvm(IOCTL_KVM_GET_XSAVE, IOCTL_KVM_GET_XSAVE2, IOCTL_KVM_SET_XSAVE, IOCTL_KVM_GET_DEBUGREGS,
                        IOCTL_KVM_SET_DEBUGREGS, IOCTL_KVM_GET_TSC_KHZ, IOCTL_KVM_SET_TSC_KHZ, IOCTL_KVM_GET_IRQCHIP,
                        IOCTL_KVM_SET_IRQCHIP, IOCTL_KVM_GET_PIT2, IOCTL_KVM_SET_PIT2, IOCTL_KVM_GET_CLOCK, IOCTL_KVM_SET_CLOCK)
        let terminal = [TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ, TIOCGPTN, TIOCSPTLCK, FIONBIO, FIOCLEX]
        let tap = [TUNSETIFF, TUNGETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUNGETFEATURES, TUNSETQUEUE,
                   SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK, SIOCGIFMTU, SIOCSIFMTU, SIOCSIFHWADDR, SIOCGIFHWADDR]
        // On-demand restore: the userfaultfd handshake, registration and the handler's fills.
        let userfaultfd = kvm(IOCTL_UFFDIO_API, IOCTL_UFFDIO_REGISTER, IOCTL_UFFDIO_UNREGISTER, IOCTL_UFFDIO_WAKE,
                              IOCTL_UFFDIO_COPY, IOCTL_UFFDIO_ZEROPAGE)
        return system + vm + vcpuSetup + state + userfaultfd + vcpuRuntime + deviceFromVCPU + eventLoop + terminal + tap
    }
}
