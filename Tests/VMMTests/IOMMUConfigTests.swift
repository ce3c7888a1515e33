import Foundation
import HypervisorTesting
import Testing
@testable import CloudHypervisor
@testable import VMM

@Suite("virtual IOMMU: iommu=on, --platform iommu_segments= and the __iommu device")
struct IOMMUConfigTests {
    func config(_ arguments: [String]) throws -> VMConfig {
        let command = try CloudHypervisorCommand.parse(CloudHypervisorCommand.normalize(["--kernel", "/k"] + arguments))
        return try #require(try command.makeConfig())
    }

    @Test("iommu=on on the devices Cloud Hypervisor places behind the IOMMU, and iommu_segments, give the VM a virtual IOMMU")
    func accepted() throws {
        for arguments in [["--disk", "path=/d,iommu=on"], ["--net", "tap=t0,iommu=on"], ["--pmem", "file=/p,size=2M,iommu=on"],
                          ["--rng", "src=/dev/urandom,iommu=on"], ["--console", "tty,iommu=on", "--serial", "off"],
                          ["--balloon", "size=0,iommu=on"], ["--vsock", "cid=3,socket=/tmp/v,iommu=on"],
                          ["--platform", "num_pci_segments=2,iommu_segments=[1]"]] {
            let config = try config(arguments)
            #expect(config.absentFeatures.isEmpty, "\(arguments)")
            try config.validate()
            #expect(config.hasVirtualIOMMU, "\(arguments)")
        }
        let plain = try config(["--disk", "path=/d"])
        #expect(!plain.hasVirtualIOMMU)
        #expect(try config(["--platform", "num_pci_segments=2,iommu_segments=[1]"]).iommuSegments == [1])
    }

    @Test("Cloud Hypervisor's refusals: an IOMMU segment beyond the count, a device on an IOMMU segment without iommu=on, iommu=on on a vhost-user device",
          arguments: [
              (["--platform", "num_pci_segments=2,iommu_segments=[2]"], "--platform", "Invalid PCI segment id: 2"),
              (["--platform", "iommu_segments=[0]"], "--rng", "Device is on an IOMMU PCI segment (0) but not placed behind IOMMU"),
              (["--platform", "num_pci_segments=2,iommu_segments=[1]", "--disk", "path=/d,pci_segment=1"], "--disk",
               "Device is on an IOMMU PCI segment (1) but not placed behind IOMMU"),
              (["--memory", "size=64M,shared=on", "--disk", "vhost_user=on,socket=/s,iommu=on"], "--disk",
               "Device does not support being placed behind IOMMU"),
          ])
    func refusals(arguments: [String], option: String, message: String) throws {
        let error = #expect(throws: ConfigError.self) { try config(arguments).validate() }
        #expect(error?.option == option, "\(String(describing: error))")
        #expect(error?.message.hasPrefix(message) == true, "\(String(describing: error))")
    }

    @Test("the binary puts the disk behind the virtio-iommu (__iommu, last on segment 0) and the tiny guest boots; iommu_segments lists all 32 slots",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func binary() throws {
        let kernel = try BinaryTests.temporaryFile("iommu.elf", TinyKernel.pvhELF(code: BinaryTests.printAndPowerOff))
        let image = try BinaryTests.temporaryFile("iommu.img", [UInt8](repeating: 0, count: 1 << 20))
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: image) }
        let run = try BinaryTests.run(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=64M",
                                       "--platform", "num_pci_segments=2,iommu_segments=[1]",
                                       "--disk", "path=\(image),iommu=on", "--rng", "src=/dev/urandom,pci_segment=1,iommu=on"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("virtio-block at 0000:00:01.0"), "\(run.stderr)")
        #expect(run.stderr.contains("behind the virtual IOMMU"), "\(run.stderr)")
        // The disk, the rng (0001:00:01.0, listed once) and the 32 slots of segment 1.
        #expect(run.stderr.contains("__iommu: virtio-iommu at 0000:00:02.0 for 33 endpoint(s)"), "\(run.stderr)")
    }

    @Test("a VM with a virtual IOMMU is snapshotted and restored in a new VMM with its __iommu; the count goes on",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func snapshotAndRestore() throws {
        let work = NSTemporaryDirectory() + "iommu-snapshot-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        let vmm = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=32M",
                                                 "--api-socket", "path=\(socket)", "--rng", "src=/dev/urandom,iommu=on"], log: work + "/vmm.log")
        defer { SnapshotBinaryTests.kill(vmm) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 4 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(vmm)
        let state = SnapshotBinaryTests.contents(work + "/snap/state.json")
        #expect(state.contains("__iommu"), "state.json lists the virtual IOMMU")
        let before = try #require(SnapshotBinaryTests.counts(SnapshotBinaryTests.contents(serial)))
        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--api-socket", "path=\(socket)", "--restore", "source_url=file://\(work)/snap,resume=on"],
                                                     log: work + "/restored.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 4 }, seconds: 60),
                "\(SnapshotBinaryTests.contents(work + "/restored.log"))")
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        #expect(info.contains("__iommu"), "\(info)")
        SnapshotBinaryTests.kill(restored)
        let after = try #require(SnapshotBinaryTests.counts(String(SnapshotBinaryTests.contents(serial).dropFirst(start))))
        #expect(after.first == before.count + 1, "the count went on: \(after.prefix(3)) after \(before.count)")
    }
}
