// swift-tools-version:6.0
// libFuzzer targets over the project's real types (issue 9). Its own package, so the
// sanitizer flags never reach the main build; Scripts/fuzz.sh builds and runs it.
//
// Each `fuzz-*` executable is linked with libFuzzer (`-sanitize=fuzzer`) and AddressSanitizer,
// with `-parse-as-library` and a Swift `@main` that hands over to libFuzzer's driver (see
// FuzzSupport/FuzzDriver.swift for why). Scripts/fuzz.sh also passes the sanitizer flags to
// every module (`-Xswiftc`), so the library code under test carries the coverage
// instrumentation libFuzzer steers by (without them, only the targets' own code is).
import PackageDescription

let fuzzerFlags: [SwiftSetting] = [.unsafeFlags(["-sanitize=fuzzer,address", "-parse-as-library"])]

/// One libFuzzer executable `fuzz-<name>` from `Sources/<folder>`.
func fuzzTarget(_ name: String, _ folder: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(
        name: "fuzz-\(name)", dependencies: ["FuzzSupport"] + dependencies, path: "Sources/\(folder)",
        swiftSettings: fuzzerFlags)
}

/// A library product of the project (the root package, one directory up).
func lib(_ name: String) -> Target.Dependency { .product(name: name, package: "cloud-hypervisor-swift") }

/// Every target: its name (`fuzz-<name>`), its source folder, and the project libraries it drives.
let targets: [(name: String, folder: String, dependencies: [Target.Dependency])] = [
    ("virtqueue", "FuzzVirtqueue", [lib("VirtioQueue"), lib("GuestMemory")]),
    ("virtio-blk", "FuzzVirtioBlock", [lib("VirtioDevices"), lib("VirtioQueue"), lib("GuestMemory"), lib("BlockStorage")]),
    ("virtio-console", "FuzzVirtioConsole", [lib("VirtioDevices"), lib("VirtioQueue"), lib("GuestMemory")]),
    ("virtio-rng", "FuzzVirtioRng", [lib("VirtioDevices"), lib("VirtioQueue"), lib("GuestMemory")]),
    ("virtio-net", "FuzzVirtioNet", [lib("VirtioDevices"), lib("VirtioQueue"), lib("GuestMemory")]),
    ("virtio-vsock", "FuzzVirtioVsock", [lib("VirtioDevices"), lib("VirtioQueue"), lib("GuestMemory")]),
    ("pci-config", "FuzzPCIConfig", [lib("PCI"), lib("DeviceModel"), lib("VirtioDevices"), lib("GuestMemory")]),
    ("elf-loader", "FuzzELFLoader", [lib("Arch"), lib("GuestMemory"), lib("HypervisorTesting")]),
    ("bzimage-loader", "FuzzBzImageLoader", [lib("Arch"), lib("GuestMemory")]),
    ("cmdline", "FuzzCmdline", [lib("Arch"), lib("GuestMemory")]),
    ("option-parser", "FuzzOptionParser", [lib("VMM")]),
    ("api-body", "FuzzAPIBody", [lib("CloudHypervisorAPI"), lib("CloudHypervisorAPITesting"), lib("VMM")]),
    ("uart", "FuzzUART", [lib("Devices"), lib("DeviceModel")]),
    ("i8042", "FuzzI8042", [lib("Devices"), lib("DeviceModel")]),
    ("cmos", "FuzzCMOS", [lib("Devices"), lib("DeviceModel")]),
    ("aml", "FuzzAML", [lib("ACPITables")]),
    ("arm64-image", "FuzzARM64Image", [lib("Arch"), lib("GuestMemory")]),
    ("arm64-fdt", "FuzzARM64DeviceTree", [lib("Arch"), lib("GuestMemory")]),
    ("snapshot-restore", "FuzzSnapshotRestore", [lib("VMM"), lib("Hypervisor")]),
    ("migration-receive", "FuzzMigrationReceive", [lib("VMM"), lib("GuestMemory")]),
    ("vhost-user-reply", "FuzzVhostUserReply", [lib("VhostUser")]),
    ("json", "FuzzJSON", [lib("JSONCoding")]),
    ("vhost-user-request", "FuzzVhostUserRequest", [lib("VhostUser"), lib("VhostUserBackend"), lib("VirtioDevices"), lib("BlockStorage"), lib("HostSystem")]),
]

let package = Package(
    name: "cloud-hypervisor-fuzz",
    products: targets.map { .executable(name: "fuzz-\($0.name)", targets: ["fuzz-\($0.name)"]) },
    dependencies: [.package(name: "cloud-hypervisor-swift", path: "..")],
    targets: [
        // libFuzzer's LLVMFuzzerRunDriver, declared for Swift.
        .systemLibrary(name: "CFuzzerDriver"),
        // The byte cursor, the driver entry, the seed writer and the virtqueue driver every target shares.
        .target(
            name: "FuzzSupport",
            dependencies: ["CFuzzerDriver", lib("VirtioQueue"), lib("GuestMemory"), lib("VirtioDevices")]),
    ] + targets.map { fuzzTarget($0.name, $0.folder, $0.dependencies) },
    swiftLanguageModes: [.v6]
)
