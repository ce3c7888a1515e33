import CloudHypervisorAPI
import Foundation
import HostSystem
import HypervisorTesting
import Testing

/// Kata Containers' Cloud Hypervisor driver, replayed against the real binary over its API
/// socket: the exact bodies and call order of Tests/CloudHypervisorAPITests/Fixtures/kata
/// (recorded from Kata's generated client and clh.go), with a real TAP descriptor passed in
/// SCM_RIGHTS with `vm.add-net`.
@Suite("Kata Containers replay")
struct KataReplayTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("CloudHypervisorAPITests/Fixtures/kata")

    static func fixture(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: fixtures.appendingPathComponent(name)))
    }

    static func json(_ response: APIClientResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
    }

    @Test("vmm.ping, vm.create with Kata's full body, vm.add-net with a TAP in SCM_RIGHTS, vm.boot, vm.info, vm.resize no-op, vmm.shutdown",
          .enabled(if: BinaryTests.kvmAvailable && tapUsable, "skipped: needs /dev/kvm and CAP_NET_ADMIN"))
    func sandboxLifecycle() throws {
        // mov dx,0x3f8; mov al,'!'; out dx,al; 1: hlt; jmp 1b
        let kernel = try BinaryTests.temporaryFile("kata.elf", TinyKernel.pvhELF(code: [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]))
        let image = try BinaryTests.temporaryFile("kata.img", [UInt8](repeating: 0, count: 1 << 20))
        let socket = NSTemporaryDirectory() + "kata-clh-api-\(getpid()).sock"
        defer { for path in [kernel, image, socket] { try? FileManager.default.removeItem(atPath: path) } }

        // Kata starts the VMM with exactly this command line (a bare socket path).
        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: BinaryTests.binary)
        vmm.arguments = ["--api-socket", socket]
        vmm.standardOutput = FileHandle.nullDevice
        vmm.standardError = FileHandle.nullDevice
        vmm.standardInput = FileHandle.nullDevice
        try vmm.run()
        defer { if vmm.isRunning { vmm.terminate(); vmm.waitUntilExit() } }
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket) && waited < 1000 { usleep(10_000); waited += 1 }

        let client = try APIClient(socketPath: socket)
        let ping = try client.request("GET", "/api/v1/vmm.ping")
        #expect(ping.status == 200 && ping.header("Content-Type") == "application/json")
        #expect(Self.json(ping)["version"] as? String == "53.0.0")

        // Kata's body as it sends it (virtio-fs on PCI segment 1, vsock, two segments): every
        // device exists, so it is created; deleted again, since no virtiofsd listens at Kata's
        // socket path here.
        let kataBody = try Self.fixture("vm.create.json")
        let whole = try client.request("PUT", "/api/v1/vm.create", body: kataBody)
        #expect(whole.status == 204, "\(whole.text)")
        #expect(try client.request("PUT", "/api/v1/vm.delete").status == 204)
        #expect(try client.request("GET", "/api/v1/vm.info").status == 404)

        // The same body without virtio-fs and with the paths made real (the vsock's socket
        // directory under /run/vc does not exist here: its socket moves to a temporary one);
        // everything else (Kata's two PCI segments, every default field, max_vcpus 4,
        // hotplug_size, shared memory) as Kata sends it.
        var config = try #require(try JSONSerialization.jsonObject(with: Data(kataBody)) as? [String: Any])
        config["fs"] = nil
        #expect((config["platform"] as? [String: Any])?["num_pci_segments"] as? Int == 2)
        var vsock = try #require(config["vsock"] as? [String: Any])
        let vsockSocket = NSTemporaryDirectory() + "kata-vsock-\(getpid()).sock"
        defer { try? FileManager.default.removeItem(atPath: vsockSocket) }
        vsock["socket"] = vsockSocket
        config["vsock"] = vsock
        var payload = config["payload"] as? [String: Any] ?? [:]
        payload["kernel"] = kernel
        config["payload"] = payload
        var disks = config["disks"] as? [[String: Any]] ?? []
        disks[0]["path"] = image
        config["disks"] = disks
        let created = try client.request("PUT", "/api/v1/vm.create", body: Array(try JSONSerialization.data(withJSONObject: config)))
        #expect(created.status == 204, "\(created.text)")
        var info = Self.json(try client.request("GET", "/api/v1/vm.info"))
        #expect(info["state"] as? String == "Created")

        // vm.add-net on a new connection, the whole request in one sendmsg with the TAP descriptor.
        let tap = try TapInterface.open(name: nil)
        let netClient = try APIClient(socketPath: socket)
        let added = try netClient.exchange(try Self.fixture("vm.add-net.http"), expecting: 1, fileDescriptors: [tap.queues[0].rawValue])
        #expect(added.first?.status == 204, "\(added.first?.text ?? "no answer")")

        let booted = try client.request("PUT", "/api/v1/vm.boot")
        #expect(booted.status == 204, "\(booted.text)")
        info = Self.json(try client.request("GET", "/api/v1/vm.info"))
        #expect(info["state"] as? String == "Running")
        #expect(info["memory_actual_size"] as? Int == 2_147_483_648)
        let echoed = info["config"] as? [String: Any] ?? [:]
        let cpus = echoed["cpus"] as? [String: Any] ?? [:]
        #expect(cpus["boot_vcpus"] as? Int == 1 && cpus["max_vcpus"] as? Int == 4 && cpus["nested"] as? Bool == true)
        let nets = echoed["net"] as? [[String: Any]] ?? []
        #expect(nets.count == 1 && nets.first?["fds"] == nil, "descriptors are never echoed: \(nets)")
        let tree = info["device_tree"] as? [String: [String: Any]] ?? [:]
        let bdf = tree["_net0"]?["pci_bdf"] as? String ?? ""
        #expect(bdf.range(of: #"^0000:00:[0-9a-f]{2}\.0$"#, options: .regularExpression) != nil, "\(tree)")
        #expect(tree["_vsock0"] != nil, "\(tree)")
        #expect((echoed["platform"] as? [String: Any])?["num_pci_segments"] as? Int == 2)
        // The NIC serves the passed TAP: its counters exist.
        let counters = Self.json(try client.request("GET", "/api/v1/vm.counters"))
        #expect(counters["_net0"] != nil, "\(counters)")

        // Kata's vm.resize on every container create: the current count is a no-op (204);
        // another count up to max_vcpus hotplugs vCPUs (204) and becomes boot_vcpus.
        #expect(try client.request("PUT", "/api/v1/vm.resize", body: try Self.fixture("vm.resize.json")).status == 204)
        let grow = try client.request("PUT", "/api/v1/vm.resize", body: try Self.fixture("vm.resize.vcpus.json"))
        #expect(grow.status == 204, "\(grow.text)")
        let resized = Self.json(try client.request("GET", "/api/v1/vm.info"))
        #expect(((resized["config"] as? [String: Any])?["cpus"] as? [String: Any])?["boot_vcpus"] as? Int == 2, "\(resized)")

        // Sandbox stop: vmm.ping, then vmm.shutdown with the VM still running; the VMM exits 0.
        #expect(try client.request("GET", "/api/v1/vmm.ping").status == 200)
        #expect(try client.request("PUT", "/api/v1/vmm.shutdown").status == 200)
        waited = 0
        while vmm.isRunning && waited < 3000 { usleep(10_000); waited += 1 }
        #expect(!vmm.isRunning && vmm.terminationStatus == 0)
    }
}
