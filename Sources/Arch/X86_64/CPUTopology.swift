/// How vCPUs are grouped: threads in a core, cores in a die, dies in a package, packages.
///
/// vCPU `n` is thread `n % threads` of core `n / threads % cores` of die
/// `n / (threads * cores) % dies` of package `n / (threads * cores * dies)`, and its x2APIC
/// ID packs those numbers in bit fields just wide enough for each level (the layout the
/// CPUID topology leaves describe).
public struct CPUTopology: Hashable, Sendable, CustomStringConvertible {
    /// Threads per core (1 without SMT).
    public var threadsPerCore: UInt16
    /// Cores per die.
    public var coresPerDie: UInt16
    /// Dies per package.
    public var diesPerPackage: UInt16
    /// Packages (sockets).
    public var packages: UInt16

    /// Creates a topology; call `validate(totalVCPUs:)` before using it.
    public init(threadsPerCore: UInt16, coresPerDie: UInt16, diesPerPackage: UInt16 = 1, packages: UInt16 = 1) {
        self.threadsPerCore = threadsPerCore
        self.coresPerDie = coresPerDie
        self.diesPerPackage = diesPerPackage
        self.packages = packages
    }

    /// Cloud Hypervisor's default: one package, one die, one core per vCPU, no SMT.
    public static func flat(vcpus: UInt16) -> CPUTopology {
        CPUTopology(threadsPerCore: 1, coresPerDie: max(vcpus, 1), diesPerPackage: 1, packages: 1)
    }

    /// Logical processors per package (threads x cores x dies).
    public var cpusPerPackage: UInt32 { UInt32(threadsPerCore) * UInt32(coresPerDie) * UInt32(diesPerPackage) }

    /// All logical processors (per package x packages).
    public var totalCPUs: UInt64 { UInt64(cpusPerPackage) * UInt64(packages) }

    /// Bits of the x2APIC ID that number the thread in its core.
    public var threadWidth: UInt32 { Self.width(threadsPerCore) }
    /// Bits that number the thread and the core in its die (shift to the die number).
    public var coreWidth: UInt32 { threadWidth + Self.width(coresPerDie) }
    /// Bits that number thread, core and die in the package (shift to the package number).
    public var dieWidth: UInt32 { coreWidth + Self.width(diesPerPackage) }

    /// Bits needed to number `count` things (0 for 1, 1 for 2, 2 for 3 or 4...).
    static func width(_ count: UInt16) -> UInt32 {
        count <= 1 ? 0 : UInt32(UInt16.bitWidth - (count - 1).leadingZeroBitCount)
    }

    /// Checks that every level has at least one member and that the topology holds exactly
    /// `totalVCPUs` processors, as Cloud Hypervisor requires.
    ///
    /// - Throws: `ArchError.invalidTopology`.
    public func validate(totalVCPUs: UInt32) throws(ArchError) {
        guard threadsPerCore > 0, coresPerDie > 0, diesPerPackage > 0, packages > 0 else {
            throw .invalidTopology(reason: "\(self) has a level with no members")
        }
        guard totalCPUs == UInt64(totalVCPUs) else {
            throw .invalidTopology(reason: "\(self) holds \(totalCPUs) vCPUs but the VM has \(totalVCPUs)")
        }
    }

    /// Checks that every level has at least one member and that the topology has room for
    /// `count` processors: the ones present at boot when the topology describes `max_vcpus`.
    ///
    /// - Throws: `ArchError.invalidTopology`.
    public func validate(holding count: UInt32) throws(ArchError) {
        guard threadsPerCore > 0, coresPerDie > 0, diesPerPackage > 0, packages > 0 else {
            throw .invalidTopology(reason: "\(self) has a level with no members")
        }
        guard totalCPUs >= UInt64(count) else {
            throw .invalidTopology(reason: "\(self) holds \(totalCPUs) vCPUs but the VM boots \(count)")
        }
    }

    /// The x2APIC ID of vCPU `cpu` (equal to `cpu` when every level's count is a power of two).
    public func x2apicID(of cpu: UInt32) -> UInt32 {
        let threads = UInt32(max(threadsPerCore, 1))
        let cores = UInt32(max(coresPerDie, 1))
        let dies = UInt32(max(diesPerPackage, 1))
        let thread = cpu % threads
        let core = cpu / threads % cores
        let die = cpu / (threads * cores) % dies
        let package = cpu / (threads * cores * dies)
        return thread | (core << threadWidth) | (die << coreWidth) | (package << dieWidth)
    }

    /// The largest x2APIC ID of the topology (that of its last vCPU).
    public var maxX2APICID: UInt32 { x2apicID(of: UInt32(clamping: max(totalCPUs, 1) - 1)) }

    /// For example `2 threads x 2 cores x 1 dies x 1 packages`.
    public var description: String {
        "\(threadsPerCore) threads x \(coresPerDie) cores x \(diesPerPackage) dies x \(packages) packages"
    }
}
