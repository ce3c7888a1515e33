import Foundation
import Testing
import VMM
@testable import CloudHypervisor

/// `--landlock` and `--landlock-rules`: parsing, validation, and the paths a configuration
/// gives the sandbox (Cloud Hypervisor's `ApplyLandlock` choices).
@Suite("Landlock configuration")
struct LandlockConfigTests {
    static func config(_ arguments: [String]) throws -> VMConfig? {
        try CloudHypervisorCommand.parse(CloudHypervisorCommand.normalize(arguments)).makeConfig()
    }

    @Test("the rule list: payload read-only, disks, serial file and NIC device read-write, rng source read-only, a socket console's directory writable, then the user's rules")
    func rulesFromConfig() throws {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/images/vmlinux", initramfs: "/images/initrd")
        config.disks = [DiskConfig(path: "/disks/root.qcow2"), DiskConfig(path: "/disks/data.raw")]
        config.serial = ConsoleConfig(mode: .file, file: "/logs/serial.log")
        config.console = ConsoleConfig(mode: .socket, socket: "/run/vm/console.sock")
        config.net = [NetConfig()]
        config.landlockEnable = true
        config.landlockRules = [LandlockConfig(path: "/hotplug", access: "rw"), LandlockConfig(path: "/snapshots", access: "w")]
        let rules = config.landlockPathRules.map { "\($0.path) \($0.access)" }
        #expect(rules == [
            "/disks/root.qcow2 rw", "/disks/data.raw rw",
            "/dev/urandom r",
            "/run/vm w",
            "/logs/serial.log rw",
            "/images/vmlinux r", "/images/initrd r",
            "/dev/net/tun rw",
            "/hotplug rw", "/snapshots w",
        ])
    }

    @Test("a pty console needs /dev/pts and /dev/ptmx; tty, null and off consoles add nothing; no NIC, no /dev/net/tun")
    func consoleModes() {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "k")
        config.serial = ConsoleConfig(mode: .pty)
        config.console = ConsoleConfig(mode: .tty)
        config.rng = RngConfig(src: "/dev/random")
        #expect(config.landlockPathRules == [
            LandlockRule("/dev/random", "r"), LandlockRule("/dev/pts", "rw"), LandlockRule("/dev/ptmx", "rw"), LandlockRule("k", "r"),
        ])
        config.serial = ConsoleConfig(mode: .null)
        config.console = ConsoleConfig(mode: .off)
        #expect(config.landlockPathRules == [LandlockRule("/dev/random", "r"), LandlockRule("k", "r")])
    }

    @Test("--landlock and repeated --landlock-rules parse into landlock_enable and landlock_rules")
    func commandLine() throws {
        let folder = NSTemporaryDirectory()
        let config = try #require(try Self.config(["--kernel", "k", "--landlock", "--landlock-rules",
                                                   "path=\(folder),access=rw", "path=/dev/null,access=r"]))
        #expect(config.landlockEnable)
        #expect(config.landlockRules == [LandlockConfig(path: folder, access: "rw"), LandlockConfig(path: "/dev/null", access: "r")])
        let twice = try #require(try Self.config(["--kernel", "k", "--landlock-rules", "path=/dev/null,access=w", "--landlock-rules", "path=/dev/zero,access=wr"]))
        #expect(twice.landlockRules?.map(\.path) == ["/dev/null", "/dev/zero"])
        #expect(twice.landlockEnable == false)
    }

    @Test("bad --landlock-rules name the option and what it accepts",
          arguments: [
            ("path=/tmp,access=x", "access=x is not accepted for /tmp; accepted values: r, w, rw"),
            ("path=/tmp,access=rwr", "access=rwr is not accepted"),
            ("path=/tmp,access=", "access= is required: path=<path/to/{file/dir}>,access=[rw]"),
            ("path=/tmp", "access"),
            ("access=rw", "path"),
            ("path=/tmp,access=rw,mode=0", "mode"),
            ("path=/nonexistent/landlock/dir,access=rw", "path=/nonexistent/landlock/dir does not exist"),
          ])
    func badRules(value: String, message: String) {
        let error = #expect(throws: ConfigError.self) { _ = try Self.config(["--kernel", "k", "--landlock", "--landlock-rules", value]) }
        #expect(error?.option == "--landlock-rules", "\(error?.description ?? "")")
        #expect(error?.description.contains(message) == true, "\(error?.description ?? "")")
    }

    @Test("landlock_enable and landlock_rules decode from a vm.create body and encode back")
    func json() throws {
        let body = #"{"payload":{"kernel":"k"},"landlock_enable":true,"landlock_rules":[{"path":"/tmp","access":"rw"},{"path":"/dev/null","access":"r"}]}"#
        let config = try JSONDecoder().decode(VMConfig.self, from: Data(body.utf8))
        #expect(config.landlockEnable)
        #expect(config.landlockRules == [LandlockConfig(path: "/tmp", access: "rw"), LandlockConfig(path: "/dev/null", access: "r")])
        #expect(config.absentFeatures.isEmpty)
        try config.validate()
        let echoed = try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)) as? [String: Any]
        #expect(echoed?["landlock_enable"] as? Bool == true)
        let rules = echoed?["landlock_rules"] as? [[String: String]]
        #expect(rules == [["path": "/tmp", "access": "rw"], ["path": "/dev/null", "access": "r"]])
    }
}
