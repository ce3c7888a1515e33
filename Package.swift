// swift-tools-version:6.0
// Cloud Hypervisor in Swift: a KVM virtual machine monitor built from small modules
// that other VMMs can embed one by one (see ARCHITECTURE.md beside the repository).
import PackageDescription

let package = Package(
    name: "cloud-hypervisor-swift",
    products: [
        .library(name: "CLinux", targets: ["CLinux"]),
        .library(name: "HostSystem", targets: ["HostSystem"]),
        .library(name: "Seccomp", targets: ["Seccomp"]),
        .library(name: "GuestMemory", targets: ["GuestMemory"]),
        .library(name: "VirtioQueue", targets: ["VirtioQueue"]),
        .library(name: "VhostUser", targets: ["VhostUser"]),
        .library(name: "VhostUserBackend", targets: ["VhostUserBackend"]),
        .library(name: "BlockStorage", targets: ["BlockStorage"]),
        .library(name: "RateLimiter", targets: ["RateLimiter"]),
        .library(name: "VMAllocator", targets: ["VMAllocator"]),
        .library(name: "ACPITables", targets: ["ACPITables"]),
        .library(name: "Hypervisor", targets: ["Hypervisor"]),
        .library(name: "HypervisorTesting", targets: ["HypervisorTesting"]),
        .library(name: "DeviceModel", targets: ["DeviceModel"]),
        .library(name: "Devices", targets: ["Devices"]),
        .library(name: "PCI", targets: ["PCI"]),
        .library(name: "VirtioDevices", targets: ["VirtioDevices"]),
        .library(name: "Interrupts", targets: ["Interrupts"]),
        .library(name: "Arch", targets: ["Arch"]),
        .library(name: "VMM", targets: ["VMM"]),
        .library(name: "CloudHypervisorAPI", targets: ["CloudHypervisorAPI"]),
        .library(name: "CloudHypervisorAPITesting", targets: ["CloudHypervisorAPITesting"]),
        .library(name: "JSONCoding", targets: ["JSONCoding"]),
        .executable(name: "cloud-hypervisor", targets: ["CloudHypervisor"]),
        .executable(name: "kvm-exit-bench", targets: ["KVMExitBench"]),
        .executable(name: "boot-bench", targets: ["BootBench"]),
        .executable(name: "ch-remote", targets: ["CHRemote"]),
        .executable(name: "api-bench", targets: ["APIBench"]),
        .executable(name: "api-test-server", targets: ["APITestServer"]),
        .executable(name: "blk-bench", targets: ["BlockBench"]),
        .executable(name: "net-bench", targets: ["NetBench"]),
        .executable(name: "memory-snapshot-bench", targets: ["MemorySnapshotBench"]),
        .library(name: "Qcow", targets: ["Qcow"]),
        .executable(name: "qcow-tool", targets: ["QcowTool"]),
        .executable(name: "qcow-bench", targets: ["QcowBench"]),
        .executable(name: "seccomp-probe", targets: ["SeccompProbe"]),
        .executable(name: "vhost_user_block", targets: ["VhostUserBlock"]),
        .executable(name: "vhost_user_net", targets: ["VhostUserNet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Layer 0: the Linux kernel ABI (KVM, virtio, boot headers) and the few C shims Swift needs.
        .target(name: "CLinux"),
        // Layer 1: owned descriptors, errno, mmap, eventfd, epoll, threads, signals.
        .target(name: "HostSystem", dependencies: ["CLinux"], exclude: ["README.md"]),
        // libseccomp, linked from the system.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        // Per-thread seccomp filters (--seccomp): an allow-list per thread kind, built with libseccomp.
        .target(name: "Seccomp", dependencies: ["CSeccomp", "CLinux"], exclude: ["README.md"]),
        // A process that installs one thread kind's filter on a thread and makes a syscall, for the Seccomp tests.
        .executableTarget(name: "SeccompProbe", dependencies: ["Seccomp", "HostSystem", "CLinux"]),
        // Layer 2: guest physical memory over host mappings.
        .target(name: "GuestMemory", dependencies: ["CLinux", "HostSystem"], exclude: ["README.md"]),
        // Split virtqueues over guest memory: validated descriptor chains, used ring, notification suppression.
        .target(name: "VirtioQueue", dependencies: ["GuestMemory"], exclude: ["README.md"]),
        // The vhost-user protocol's front-end: message codec, total reply decoding, the socket client.
        .target(name: "VhostUser", dependencies: ["HostSystem"], exclude: ["README.md"]),
        // Disk contents behind a small protocol: raw files (preadv/pwritev, O_DIRECT, image locks) and memory.
        // liburing (Debian's liburing-dev) behind a small C engine: per-queue rings for virtio-blk.
        .target(name: "CIOUring", linkerSettings: [.linkedLibrary("uring")]),
        .target(name: "BlockStorage", dependencies: ["CLinux", "HostSystem", "CIOUring"], exclude: ["README.md"]),
        // Address-space, GSI and ID allocators (pure Swift, no host access).
        .target(name: "VMAllocator", exclude: ["README.md"]),
        // Token-bucket I/O throttling (bandwidth and operations), driven by the caller's clock.
        .target(name: "RateLimiter", exclude: ["README.md"]),
        // ACPI tables (RSDP, XSDT, FADT, MADT, MCFG, DSDT) and an AML encoder: pure byte builders.
        .target(name: "ACPITables", exclude: ["README.md"]),
        // Hypervisor protocols and the KVM backend.
        .target(name: "Hypervisor", dependencies: ["CLinux", "HostSystem", "GuestMemory"], exclude: ["README.md"]),
        // Tiny KVM guests (real mode, 64-bit CPL3) for tests and benchmarks.
        .target(name: "HypervisorTesting", dependencies: ["Hypervisor", "HostSystem"]),
        // JSON without Foundation: a strict RFC 8259 parser, a serializer, and Codable's Encoder and Decoder.
        .target(name: "JSONCoding", exclude: ["README.md"]),
        // Seeded random generators shared by the randomized and fuzz-style tests.
        .target(name: "TestSupport"),
        // The bus layer devices plug into: BusDevice, Bus (port I/O and MMIO), InterruptLine.
        .target(name: "DeviceModel", exclude: ["README.md"]),
        // Legacy platform devices as passive state machines (16550 UART, i8042, CMOS RTC, debug port).
        .target(name: "Devices", dependencies: ["DeviceModel"], exclude: ["README.md"]),
        // PCI configuration space, BARs, capabilities, MSI/MSI-X, the bus, ECAM and 0xCF8/0xCFC.
        .target(name: "PCI", dependencies: ["DeviceModel"], exclude: ["README.md"]),
        // Virtio devices and the virtio-pci transport (modern, 1.x), as passive state machines.
        .target(name: "VirtioDevices", dependencies: ["PCI", "VirtioQueue", "GuestMemory", "BlockStorage", "RateLimiter"], exclude: ["README.md"]),
        // A VM's GSI routing table and irqfds: MSI vectors, and PCI MSI-X routed to KVM.
        .target(name: "Interrupts", dependencies: ["Hypervisor", "HostSystem", "VMAllocator", "PCI"]),
        // x86-64 boot: memory layout, kernel loaders, boot structures, CPUID, MP table.
        .target(name: "Arch", dependencies: ["GuestMemory", "Hypervisor"], exclude: ["README.md"]),
        // Configuration, the VM builder, vCPU threads and the lifecycle.
        .target(name: "VMM", dependencies: [
            "CLinux", "HostSystem", "GuestMemory", "Hypervisor", "Arch", "ACPITables", "DeviceModel", "Devices", "PCI",
            "Interrupts", "VirtioDevices", "VhostUser", "VMAllocator", "BlockStorage", "Qcow", "Seccomp", "RateLimiter", "JSONCoding",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The vhost-user protocol's back-end: serves one of the virtio devices above to another VMM.
        .target(name: "VhostUserBackend", dependencies: [
            "VhostUser", "VirtioDevices", "VirtioQueue", "GuestMemory", "HostSystem",
            .product(name: "Logging", package: "swift-log"),
        ], exclude: ["README.md"]),
        // The vhost_user_block command: a raw or qcow2 image served as vhost-user-blk.
        .executableTarget(name: "VhostUserBlock", dependencies: [
            "VhostUserBackend", "VirtioDevices", "Qcow", "BlockStorage", "HostSystem", "VMM",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The vhost_user_net command: a TAP interface served as vhost-user-net.
        .executableTarget(name: "VhostUserNet", dependencies: [
            "VhostUserBackend", "VirtioDevices", "HostSystem", "VMM",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The cloud-hypervisor command. Its release build is linked for size (README, "Boot"):
        // the command-line module compiled -Osize, lld folding identical functions, relative
        // relocations packed (DT_RELR, glibc 2.36), the unwind tables dropped.
        // These unsafe flags sit on this executable only, so the library products stay usable as dependencies.
        .executableTarget(name: "CloudHypervisor", dependencies: [
            "VMM", "HostSystem", "CLinux", "CloudHypervisorAPI", "Seccomp",
            .product(name: "Logging", package: "swift-log"),
        ], exclude: ["discard-unwind-tables.ld", "link-order.txt"],
        swiftSettings: [.unsafeFlags(["-Osize"], .when(configuration: .release))],
        linkerSettings: [.unsafeFlags([
            "-use-ld=lld", "-Xlinker", "--icf=all", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
            "-Xlinker", "--script=\(Context.packageDirectory)/Sources/CloudHypervisor/discard-unwind-tables.ld",
            // The functions an idle booted VMM has run, first and together (Scripts/update-link-order.sh).
            "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/CloudHypervisor/link-order.txt",
            "-Xlinker", "--no-warn-symbol-ordering",
        ], .when(platforms: [.linux], configuration: .release))]),

        // The REST API (Cloud Hypervisor's /api/v1 over a Unix socket) and its blocking client.
        .target(name: "CloudHypervisorAPI", dependencies: [
            "VMM", "HostSystem", "JSONCoding",
            .product(name: "Logging", package: "swift-log"),
        ], exclude: ["README.md"]),
        // A scripted VMMControl (Cloud Hypervisor's state machine, no VM) for API tests, fuzzing and benchmarks.
        .target(name: "CloudHypervisorAPITesting", dependencies: ["VMM", "CloudHypervisorAPI"]),
        // The ch-remote command.
        .executableTarget(name: "CHRemote", dependencies: [
            "CloudHypervisorAPI", "HostSystem", "VMM", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The API server over the fake control, for Scripts/api-fuzz.sh.
        .executableTarget(name: "APITestServer", dependencies: [
            "CloudHypervisorAPI", "CloudHypervisorAPITesting", "HostSystem",
        ]),
        // Benchmark: vmm.ping and vm.info latency over the API socket.
        .executableTarget(
            name: "APIBench", dependencies: ["CloudHypervisorAPI", "CloudHypervisorAPITesting"], path: "Benchmarks/APIBench"),

        // Benchmark: one million port-I/O exits through the Swift KVM backend and through a C floor.
        .target(name: "KVMExitFloor", path: "Benchmarks/KVMExitFloor"),
        .executableTarget(
            name: "KVMExitBench",
            dependencies: ["Hypervisor", "HypervisorTesting", "HostSystem", "KVMExitFloor"],
            path: "Benchmarks/KVMExitBench"),
        // What the benchmark executables share (a monotonic clock, failing with a message).
        .target(name: "BenchmarkSupport", path: "Benchmarks/BenchmarkSupport"),
        // Benchmark: process start to the first guest instruction of a tiny PVH guest.
        .executableTarget(name: "BootBench", dependencies: ["BenchmarkSupport", "HypervisorTesting", "CLinux"], path: "Benchmarks/BootBench"),
        // Benchmark: virtio-blk requests per second through the queue handling, against a pread/pwrite floor.
        .executableTarget(name: "BlockBench", dependencies: ["BenchmarkSupport", "BlockStorage", "GuestMemory", "VirtioDevices", "VirtioQueue"],
                          path: "Benchmarks/BlockBench"),
        // Benchmark: virtio-net transmissions per second through the queue handling and the TAP backend, against a writev floor.
        .executableTarget(name: "NetBench", dependencies: ["BenchmarkSupport", "GuestMemory", "HostSystem", "VirtioDevices", "VirtioQueue", "VMM"],
                          path: "Benchmarks/NetBench"),
        // Benchmark: saving guest memory to a sparse snapshot file and restoring it (copy and on demand).
        .executableTarget(name: "MemorySnapshotBench", dependencies: ["GuestMemory", "HostSystem"],
                          path: "Benchmarks/MemorySnapshotBench"),

        // zlib (inflate for compressed qcow2 clusters), linked from the system.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // qcow2 images (read, write, create, check) and format detection, behind BlockBackend.
        .target(name: "Qcow", dependencies: ["BlockStorage", "HostSystem", "CLinux", "CZlib"], exclude: ["README.md"]),
        // qcow-tool: info, check, create and convert for qcow2 images.
        .executableTarget(name: "QcowTool", dependencies: [
            "Qcow", "BlockStorage", "HostSystem", "TestSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmark: sequential and 4 KiB random I/O through the Qcow module (Scripts/bench-qcow.sh compares with qemu).
        .executableTarget(name: "QcowBench", dependencies: ["BenchmarkSupport", "Qcow", "BlockStorage", "TestSupport"], path: "Benchmarks/QcowBench"),
        .testTarget(name: "QcowTests", dependencies: ["Qcow", "BlockStorage", "HostSystem", "TestSupport"]),

        .testTarget(name: "HostSystemTests", dependencies: ["HostSystem"]),
        .testTarget(name: "SeccompTests", dependencies: ["Seccomp"]),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "HostSystem"]),
        .testTarget(name: "VirtioQueueTests", dependencies: ["TestSupport", "VirtioQueue", "GuestMemory"]),
        .testTarget(name: "BlockStorageTests", dependencies: ["BlockStorage", "HostSystem"]),
        .testTarget(name: "VhostUserTests", dependencies: ["VhostUser", "HostSystem"]),
        .testTarget(name: "VhostUserBackendTests", dependencies: [
            "VhostUserBackend", "VhostUser", "VirtioDevices", "VirtioQueue", "GuestMemory", "BlockStorage", "HostSystem", "TestSupport",
        ]),
        .testTarget(name: "RateLimiterTests", dependencies: ["RateLimiter"]),
        .testTarget(name: "VMAllocatorTests", dependencies: ["TestSupport", "VMAllocator"]),
        .testTarget(name: "ACPITablesTests", dependencies: ["ACPITables"]),
        .testTarget(name: "JSONCodingTests", dependencies: ["JSONCoding", "TestSupport"]),
        .testTarget(name: "DeviceModelTests", dependencies: ["TestSupport", "DeviceModel"]),
        .testTarget(name: "DevicesTests", dependencies: ["TestSupport", "Devices", "DeviceModel"]),
        .testTarget(name: "InterruptsTests", dependencies: ["Interrupts", "Hypervisor", "HypervisorTesting", "HostSystem", "PCI"]),
        .testTarget(name: "VirtioDevicesTests", dependencies: ["VirtioDevices", "VirtioQueue", "GuestMemory", "PCI", "BlockStorage", "RateLimiter", "TestSupport"]),
        .testTarget(name: "PCITests", dependencies: ["TestSupport", "PCI", "DeviceModel"]),
        .testTarget(name: "VMMTests", dependencies: [
            "VMM", "DeviceModel", "Hypervisor", "HypervisorTesting", "HostSystem", "PCI", "Seccomp", "CloudHypervisor", "CloudHypervisorAPI",
            "VhostUserBackend", "BlockStorage", "TestSupport", .product(name: "Logging", package: "swift-log"),
        ], exclude: ["Fixtures"]),
        .testTarget(name: "CloudHypervisorAPITests", dependencies: [
            "CloudHypervisorAPI", "CloudHypervisorAPITesting", "VMM", "HostSystem",
        ], exclude: ["Fixtures"]),
        .testTarget(name: "ArchTests", dependencies: ["Arch", "GuestMemory", "Hypervisor"]),
        .testTarget(name: "HypervisorTests", dependencies: ["Hypervisor", "HypervisorTesting", "GuestMemory", "HostSystem"]),
    ],
    swiftLanguageModes: [.v6]
)

/// Whether this manifest is evaluated for this package built on its own rather than as another
/// package's dependency (whose manifest SwiftPM and Xcode evaluate in a `checkouts` directory).
let builtAsRoot = !Context.packageDirectory.split(separator: "/").contains("checkouts")

// Release builds of this package on its own emit each function in a section of its own, so that
// the linker's --gc-sections drops unused functions one by one (Swift puts most of a file's
// functions in one .text otherwise) and the link order above can gather the functions the VMM
// runs. Off when the package is a dependency: SwiftPM refuses a dependency whose products'
// targets carry unsafe flags.
if builtAsRoot {
    for target in package.targets where target.type != .system {
        target.swiftSettings = (target.swiftSettings ?? [])
            + [.unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release))]
    }
}
