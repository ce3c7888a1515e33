import Hypervisor

/// Choices for `CPUIDBuilder` beyond the topology.
public struct CPUIDOptions: Hashable, Sendable {
    /// Advertise the TSC-deadline timer (leaf 1 ECX bit 24). KVM emulates it with its
    /// in-kernel LAPIC but does not report it in its supported list; Cloud Hypervisor sets it.
    /// `false` leaves the bit as KVM reports it.
    public var tscDeadline: Bool
    /// The guest's physical address width for leaf 0x8000_0008 EAX[7:0]; `nil` keeps KVM's.
    public var physicalAddressBits: UInt8?
    /// A brand string (at most 47 bytes, NUL padded) for leaves 0x8000_0002..4; `nil` keeps
    /// the host's brand string that KVM passes through, which is what Cloud Hypervisor shows.
    public var brandString: String?
    /// The TSC frequency in kHz to publish in the KVM leaf 0x4000_0010 (with the LAPIC bus
    /// at 1 GHz); `nil` publishes none. Cloud Hypervisor does this when the host TSC is
    /// invariant.
    public var tscFrequencyKHz: UInt32?
    /// Offer the host's virtualisation extensions to the guest (Cloud Hypervisor's
    /// `nested`, on by default). `false` clears VMX (leaf 1 ECX bit 5) and SVM (leaf
    /// 0x8000_0001 ECX bit 2) and drops the SVM feature leaf 0x8000_000A.
    public var nestedVirtualization: Bool

    /// Cloud Hypervisor's defaults: TSC deadline on, KVM's address width and the host brand.
    public init(tscDeadline: Bool = true, physicalAddressBits: UInt8? = nil, brandString: String? = nil,
                tscFrequencyKHz: UInt32? = nil, nestedVirtualization: Bool = true) {
        self.tscDeadline = tscDeadline
        self.physicalAddressBits = physicalAddressBits
        self.brandString = brandString
        self.tscFrequencyKHz = tscFrequencyKHz
        self.nestedVirtualization = nestedVirtualization
    }
}

/// Builds one vCPU's CPUID table from KVM's supported list: a pure function of its inputs.
///
/// What changes, after Cloud Hypervisor's `generate_common_cpuid` and `configure_vcpu`:
/// - leaf 1: EBX[31:24] the initial APIC ID, EBX[23:16] the logical processors per package;
///   ECX bit 31 (running under a hypervisor) and bit 24 (TSC deadline, optional); EDX bit
///   12 (MTRR) and bit 28 (HTT);
/// - leaf 4 (deterministic caches): EAX[31:26] cores per package - 1, EAX[25:14] threads
///   sharing the cache - 1 (a core's threads for L1/L2, the package for L3 and beyond);
/// - leaves 0xB and 0x1F (x2APIC topology) replaced: SMT and core levels in 0xB; SMT, core
///   and die levels in 0x1F; each ended by an invalid level; EDX the x2APIC ID everywhere;
/// - AMD only: leaf 0x8000_001E (extended APIC ID, core and node IDs), 0x8000_0008 ECX
///   (APIC ID size and thread count), and 0x8000_0001 ECX CmpLegacy (plus TopologyExtensions
///   when KVM reports the cache-topology leaf 0x8000_001D) for multi-threaded packages;
/// - the KVM leaves: 0x4000_0000 with the "KVMKVMKVM\0\0\0" signature and the highest KVM
///   leaf, 0x4000_0001 with KVM's own feature bits (zero when KVM lists none), and
///   optionally 0x4000_0010 with the TSC frequency;
/// - optionally the brand string and the physical address width.
///
/// Every other leaf (features, TSC deadline support, XSAVE sizes...) stays as KVM reports it.
public enum CPUIDBuilder {
    /// Leaf 1 ECX bit 31: a hypervisor is present.
    public static let hypervisorBit: UInt32 = 1 << 31
    /// Leaf 1 ECX bit 24: TSC-deadline mode of the LAPIC timer.
    public static let tscDeadlineBit: UInt32 = 1 << 24
    /// Leaf 1 EDX bit 12: MTRRs.
    public static let mtrrBit: UInt32 = 1 << 12
    /// Leaf 1 EDX bit 28: more than one logical processor per package may exist.
    public static let httBit: UInt32 = 1 << 28
    /// "KVMK", "VMKV", "M\0\0\0": KVM's hypervisor signature in EBX, ECX, EDX of 0x4000_0000.
    public static let kvmSignature: (ebx: UInt32, ecx: UInt32, edx: UInt32) = (0x4B4D_564B, 0x564B_4D56, 0x0000_004D)
    /// "AuthenticAMD"'s first four bytes as leaf 0 EBX.
    static let amdVendorEBX: UInt32 = 0x6874_7541

    /// The guest's physical address width as Cloud Hypervisor picks it (`physical_bits`):
    /// the host's (leaf 0x8000_0008 EAX[7:0] of `supported`, 36 when the leaf is missing),
    /// capped at `maximum` (`--cpus max_phys_bits=`).
    public static func physicalAddressBits(supported: [CPUIDEntry], maximum: UInt8) -> UInt8 {
        let host = supported.first { $0.function == 0x8000_0008 }.map { UInt8($0.eax & 0xFF) } ?? 36
        return min(host == 0 ? 36 : host, maximum)
    }

    /// The CPUID table for vCPU `vcpuID` of a VM with `totalVCPUs` vCPUs laid out as `topology`.
    ///
    /// - Throws: `.invalidTopology` (see `CPUTopology.validate`), `.vcpuIDOutOfRange`,
    ///   `.invalidBrandString` for a brand of more than 47 bytes.
    public static func build(supported: [CPUIDEntry], vcpuID: UInt32, topology: CPUTopology, totalVCPUs: UInt32,
                             options: CPUIDOptions = CPUIDOptions()) throws(ArchError) -> [CPUIDEntry] {
        try topology.validate(totalVCPUs: totalVCPUs)
        guard vcpuID < totalVCPUs else { throw .vcpuIDOutOfRange(id: vcpuID, count: totalVCPUs) }
        let x2apicID = topology.x2apicID(of: vcpuID)
        let perPackage = topology.cpusPerPackage
        let threads = UInt32(topology.threadsPerCore)
        let coresPerPackage = UInt32(topology.coresPerDie) * UInt32(topology.diesPerPackage)
        let isAMD = supported.first { $0.function == 0 }?.ebx == amdVendorEBX
        let hasCacheTopology = supported.contains { $0.function == 0x8000_001D }

        var table: [CPUIDEntry] = []
        for entry in supported {
            var entry = entry
            switch entry.function {
            case 0x1:
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (min(perPackage, 0xFF) << 16) | ((x2apicID & 0xFF) << 24)
                entry.ecx |= hypervisorBit | (options.tscDeadline ? tscDeadlineBit : 0)
                entry.edx |= mtrrBit | httBit
            case 0x4 where entry.eax & 0x1F != 0:
                let level = (entry.eax >> 5) & 0x7
                let sharing = level <= 2 ? threads : perPackage
                entry.eax = (entry.eax & 0x3FFF) | ((min(coresPerPackage, 64) - 1) << 26) | ((min(sharing, 4096) - 1) << 14)
            case 0xB, 0x1F, 0x4000_0000, 0x4000_0010:
                continue  // rebuilt below
            case 0x4000_0001:
                continue  // re-added below with KVM's bits
            case 0x8000_0001 where isAMD && perPackage > 1:
                entry.ecx |= (1 << 1) | (hasCacheTopology ? 1 << 22 : 0)
            case 0x8000_0002...0x8000_0004 where options.brandString != nil:
                continue  // replaced below
            case 0x8000_0008:
                if let bits = options.physicalAddressBits { entry.eax = (entry.eax & 0xFFFF_FF00) | UInt32(bits) }
                if isAMD {
                    let fields: UInt32 = perPackage > 1 ? (topology.dieWidth << 12) | ((perPackage - 1) & 0xFF) : 0
                    entry.ecx = (entry.ecx & ~0xF0FF) | fields
                }
            case 0x8000_001E where isAMD:
                continue  // rebuilt below
            default:
                break
            }
            table.append(entry)
        }

        table += topologyLeaves(topology: topology, x2apicID: x2apicID)
        if isAMD {
            let coreID = (x2apicID >> topology.threadWidth) & 0xFF
            let dieID = (x2apicID >> topology.coreWidth) & ((1 << (topology.dieWidth - topology.coreWidth)) - 1)
            table.append(CPUIDEntry(function: 0x8000_001E, eax: x2apicID, ebx: ((threads - 1) << 8) | coreID,
                                    ecx: ((UInt32(topology.diesPerPackage) - 1) << 8) | (dieID & 0xFF), edx: 0))
        }
        let kvmFeatures = supported.first { $0.function == 0x4000_0001 }
        let highestKVMLeaf: UInt32 = options.tscFrequencyKHz == nil ? 0x4000_0001 : 0x4000_0010
        table.append(CPUIDEntry(function: 0x4000_0000, eax: highestKVMLeaf, ebx: kvmSignature.ebx,
                                ecx: kvmSignature.ecx, edx: kvmSignature.edx))
        table.append(CPUIDEntry(function: 0x4000_0001, eax: kvmFeatures?.eax ?? 0, ebx: kvmFeatures?.ebx ?? 0,
                                ecx: kvmFeatures?.ecx ?? 0, edx: kvmFeatures?.edx ?? 0))
        if let khz = options.tscFrequencyKHz {
            table.append(CPUIDEntry(function: 0x4000_0010, eax: khz, ebx: 1_000_000))
        }
        if let brand = options.brandString {
            table += try brandLeaves(brand)
        }
        if !options.nestedVirtualization {
            table.removeAll { $0.function == 0x8000_000A }
            for index in table.indices {
                if table[index].function == 0x1 { table[index].ecx &= ~(UInt32(1) << 5) }
                if table[index].function == 0x8000_0001 { table[index].ecx &= ~(UInt32(1) << 2) }
            }
        }
        return table.sorted { ($0.function, $0.index) < ($1.function, $1.index) }
    }

    /// Leaves 0xB and 0x1F for one vCPU: each level's shift width in EAX[4:0], its processor
    /// count in EBX[15:0], its type and number in ECX (type << 8 | level), the x2APIC ID in EDX.
    static func topologyLeaves(topology: CPUTopology, x2apicID: UInt32) -> [CPUIDEntry] {
        let threads = UInt32(topology.threadsPerCore)
        let perDie = threads * UInt32(topology.coresPerDie)
        let perPackage = topology.cpusPerPackage
        // (width, count, type): type 1 SMT, 2 core, 5 die, 0 invalid.
        let legacy: [(UInt32, UInt32, UInt32)] = [
            (topology.threadWidth, threads, 1), (topology.dieWidth, perPackage, 2), (0, 0, 0),
        ]
        let extended: [(UInt32, UInt32, UInt32)] = [
            (topology.threadWidth, threads, 1), (topology.coreWidth, perDie, 2), (topology.dieWidth, perPackage, 5), (0, 0, 0),
        ]
        var leaves: [CPUIDEntry] = []
        for (function, levels) in [(UInt32(0xB), legacy), (UInt32(0x1F), extended)] {
            for (level, (width, count, type)) in levels.enumerated() {
                leaves.append(CPUIDEntry(function: function, index: UInt32(level), flags: CPUIDEntry.significantIndex,
                                         eax: width & 0x1F, ebx: count & 0xFFFF, ecx: (type << 8) | UInt32(level),
                                         edx: x2apicID))
            }
        }
        return leaves
    }

    /// Leaves 0x8000_0002..4: the brand string's bytes, NUL padded to 48, four per register.
    static func brandLeaves(_ brand: String) throws(ArchError) -> [CPUIDEntry] {
        let utf8 = Array(brand.utf8)
        guard utf8.count <= 47, !utf8.contains(0) else { throw .invalidBrandString(brand) }
        let bytes = paddedASCII(brand, length: 48, pad: 0)
        return (0..<3).map { leaf in
            let registers = (0..<4).map { register in bytes.loadLittleEndian(UInt32.self, at: leaf * 16 + register * 4)! }
            return CPUIDEntry(function: 0x8000_0002 + UInt32(leaf), eax: registers[0], ebx: registers[1],
                              ecx: registers[2], edx: registers[3])
        }
    }
}
