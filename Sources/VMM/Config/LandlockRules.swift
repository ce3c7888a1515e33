// `--landlock` and `--landlock-rules`: which paths a VM's configuration lets the sandboxed VMM
// reach, and how, as Cloud Hypervisor's `ApplyLandlock` implementations choose them
// (vmm/src/vm_config.rs): payload files read-only, disks, consoles and sockets read-write,
// the rng source read-only, /dev/net/tun for NICs, then the user's rules.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One path the VMM's Landlock ruleset allows: the file, or everything beneath the directory,
/// with `r` (read), `w` (write) or `rw` access.
public struct LandlockRule: Equatable, Sendable, CustomStringConvertible {
    /// The file or directory.
    public var path: String
    /// `r`, `w` or `rw`.
    public var access: String

    /// A rule.
    public init(_ path: String, _ access: String) {
        self.path = path
        self.access = access
    }

    /// `path (access)`.
    public var description: String { "\(path) (\(access))" }
}

extension VMConfig {
    /// The rules a Landlock sandbox for this VM holds, in Cloud Hypervisor's order: memory zone
    /// files, disks, the rng source, virtio-fs and vhost-user sockets, pmem files, the
    /// consoles (a pty needs `/dev/pts` and `/dev/ptmx`), VFIO, vDPA, vsock, the payload,
    /// the TPM socket, `/dev/net/tun` when there are NICs, and last the `landlock_rules`.
    ///
    /// One difference: Cloud Hypervisor listens on a console's socket before the sandbox
    /// goes on; this VMM listens when the VM boots, so a socket console's directory gets
    /// write access (to create the socket file), as Cloud Hypervisor gives vsock's.
    public var landlockPathRules: [LandlockRule] {
        var rules: [LandlockRule] = []
        for zone in memory.zones ?? [] {
            if let file = zone.file { rules.append(LandlockRule(file, "rw")) }
        }
        for disk in disks ?? [] {
            if let path = disk.path { rules.append(LandlockRule(path, "rw")) }
        }
        rules.append(LandlockRule(rng.src, "r"))
        for device in fs ?? [] { rules.append(LandlockRule(device.socket, "rw")) }
        for device in genericVhostUser ?? [] { rules.append(LandlockRule(device.socket, "rw")) }
        for device in pmem ?? [] { rules.append(LandlockRule(device.file, device.discardWrites ? "r" : "rw")) }
        rules += Self.consoleRules(console.mode, file: console.file, socket: console.socket)
        rules += Self.consoleRules(serial.mode, file: serial.file, socket: serial.socket)
        rules += Self.consoleRules(debugConsole.mode, file: debugConsole.file, socket: nil)
        if let devices, !devices.isEmpty {
            rules.append(LandlockRule("/dev/vfio/vfio", "rw"))
            for device in devices {
                // The device's IOMMU group, /dev/vfio/<group>, from its sysfs iommu_group link.
                guard let path = device.path, let group = Self.iommuGroup(of: path) else { continue }
                rules.append(LandlockRule("/dev/vfio/\(group)", "rw"))
            }
        }
        for device in userDevices ?? [] { rules.append(LandlockRule(device.socket, "rw")) }
        for device in vdpa ?? [] { rules.append(LandlockRule(device.path, "rw")) }
        if let vsock {
            rules.append(LandlockRule(Self.directory(of: vsock.socket), "w"))
            rules.append(LandlockRule(vsock.socket, "rw"))
        }
        if let payload {
            for file in [payload.firmware, payload.kernel, payload.initramfs, payload.igvm] {
                if let file { rules.append(LandlockRule(file, "r")) }
            }
        }
        if let tpm { rules.append(LandlockRule(tpm.socket, "rw")) }
        if net != nil { rules.append(LandlockRule("/dev/net/tun", "rw")) }
        for rule in landlockRules ?? [] { rules.append(LandlockRule(rule.path, rule.access)) }
        return rules
    }

    /// A serial port's, console's or debug console's paths.
    static func consoleRules(_ mode: ConsoleOutputMode, file: String?, socket: String?) -> [LandlockRule] {
        var rules: [LandlockRule] = []
        if mode == .pty { rules += [LandlockRule("/dev/pts", "rw"), LandlockRule("/dev/ptmx", "rw")] }
        if mode == .file, let file { rules.append(LandlockRule(file, "rw")) }
        if mode == .socket, let socket {
            rules.append(LandlockRule(directory(of: socket), "w"))
        }
        return rules
    }

    /// The directory a path is in (`.` for a bare name).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The IOMMU group number a VFIO device's sysfs directory links to (`iommu_group`).
    static func iommuGroup(of device: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(device + "/iommu_group", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        let target = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }

    /// `landlock_rules`: each path must exist and each access be made of `r` and `w` (Cloud
    /// Hypervisor's checks); rules without `landlock_enable` are accepted and unused, as there.
    func validateLandlockRules() throws(ConfigError) {
        for rule in landlockRules ?? [] {
            try rule.validateAccess()
            var info = stat()
            guard stat(rule.path, &info) == 0 else {
                throw ConfigError(option: "--landlock-rules", "path=\(rule.path) does not exist (a Landlock rule needs an existing file or directory)")
            }
        }
    }
}

extension LandlockConfig {
    /// Checks `access`: one or two of `r` and `w`.
    func validateAccess() throws(ConfigError) {
        guard !access.isEmpty, access.count <= 2, access.allSatisfy({ $0 == "r" || $0 == "w" }) else {
            throw ConfigError(option: "--landlock-rules", "access=\(access) is not accepted for \(path); accepted values: r, w, rw")
        }
    }
}
