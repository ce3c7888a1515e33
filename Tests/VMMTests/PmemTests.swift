import ACPITables
import Foundation
import HostSystem
import HypervisorTesting
import Testing
@testable import VMM

@Suite("--pmem: validation, ids, the backing file's size rules, and the 64-bit window in _CRS")
struct PmemTests {
    func config(_ pmem: [String]) throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        config.pmem = try pmem.map(PmemConfig.parse)
        return config
    }

    func temporaryDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmem-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.path
    }

    func file(_ path: String, size: Int) throws -> String {
        _ = FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x5A, count: size))
        return path
    }

    @Test("ids default to _pmem<N>; a size that is not a multiple of 2 MiB and an id in use are refused, iommu=on is taken")
    func validation() throws {
        let two = try config(["file=/tmp/a,size=2M", "file=/tmp/b,id=mine"])
        try two.validate()
        #expect(two.pmemIDs == ["_pmem0", "mine"])
        #expect(two.absentFeatures.isEmpty)
        let odd = #expect(throws: ConfigError.self) { try config(["file=/tmp/a,size=3M"]).validate() }
        #expect(odd?.option == "--pmem" && odd?.message.contains("not a multiple of 2 MiB") == true, "\(odd?.description ?? "")")
        #expect(throws: ConfigError.self) { try config(["file=/tmp/a,size=0"]).validate() }
        var clash = try config(["file=/tmp/a,id=d"])
        clash.disks = [try DiskConfig.parse("path=/tmp/x,id=d")]
        #expect(throws: ConfigError.self) { try clash.validate() }
        clash = try config(["file=/tmp/a,id=v"])
        clash.vsock = try VsockConfig.parse("cid=3,socket=/tmp/v.sock,id=v")
        #expect(throws: ConfigError.self) { try clash.validate() }
        let behind = try config(["file=/tmp/a,size=2M,iommu=on"])
        #expect(behind.absentFeatures.isEmpty && behind.hasVirtualIOMMU)
        try behind.validate()
    }

    @Test("the size is size= or the file's, a multiple of 2 MiB; a smaller writable file is extended, a read-only one refused")
    func backingSizes() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let whole = try file("\(directory)/whole", size: 4 << 20)
        #expect(try PmemBacking.open(PmemConfig(file: whole)).size == 4 << 20)

        let odd = try file("\(directory)/odd", size: 3 << 20)
        let error = #expect(throws: ConfigError.self) { _ = try PmemBacking.open(PmemConfig(file: odd)) }
        #expect(error?.message.contains("not a multiple of 2 MiB") == true, "\(error?.description ?? "")")

        let small = try file("\(directory)/small", size: 1 << 20)
        var extend = PmemConfig(file: small)
        extend.size = 8 << 20
        #expect(try PmemBacking.open(extend).size == 8 << 20)
        #expect(try FileManager.default.attributesOfItem(atPath: small)[.size] as? Int == 8 << 20)

        let readOnly = try file("\(directory)/readonly", size: 2 << 20)
        var discard = PmemConfig(file: readOnly)
        discard.size = 4 << 20
        discard.discardWrites = true
        #expect(throws: ConfigError.self) { _ = try PmemBacking.open(discard) }
        #expect(try FileManager.default.attributesOfItem(atPath: readOnly)[.size] as? Int == 2 << 20)

        #expect(throws: ConfigError.self) { _ = try PmemBacking.open(PmemConfig(file: "\(directory)/missing")) }
        let empty = try file("\(directory)/empty", size: 0)
        #expect(throws: ConfigError.self) { _ = try PmemBacking.open(PmemConfig(file: empty)) }
    }

    @Test("a directory gives an unnamed file of size= (O_TMPFILE); without size= it is refused")
    func directoryBacking() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let error = #expect(throws: ConfigError.self) { _ = try PmemBacking.open(PmemConfig(file: directory)) }
        #expect(error?.message.contains("directory") == true)
        var sized = PmemConfig(file: directory)
        sized.size = 6 << 20
        let backing = try PmemBacking.open(sized)
        let fileSize = try backing.file.size()
        #expect(backing.size == 6 << 20 && fileSize == 6 << 20)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test("vm.add-pmem before boot goes into the configuration and vm.remove-device takes it out")
    func addBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        #expect(try controller.addPmem(try PmemConfig.parse("file=/tmp/p,size=2M")) == nil)
        #expect(try controller.info().config.pmem?.count == 1)
        #expect(throws: ControlError.self) { _ = try controller.addPmem(try PmemConfig.parse("file=/tmp/q,size=1M")) }
        try controller.removeDevice(id: "_pmem0")
        #expect(try controller.info().config.pmem == nil)
    }

    @Test("the host bridge _CRS has the 64-bit device area as a QWordMemory window")
    func hostBridgeWindow() throws {
        let area = (base: UInt64(0x1_0000_0000), size: UInt64(0xFF_FFEF_0000 - 0x1_0000_0000))
        let windows = try #require(PCISegmentLayout.plan(weights: ([1], [1]), deviceArea: area).first).hostBridge
        #expect(windows.mmio64?.base == area.base && windows.mmio64?.size == area.size)
        let bytes = PlatformAML.pciHostBridge(windows).amlBytes
        // QWord address space descriptor: 0x8A, length 43, resource type 0 (memory).
        let header: [UInt8] = [0x8A, 0x2B, 0x00, 0x00]
        let found = (0..<(bytes.count - 46)).first { (index: Int) -> Bool in Array(bytes[index..<(index + 4)]) == header }
        let start = try #require(found)
        func le64(_ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[start + offset + $1]) << ($1 * 8) } }
        #expect(le64(14) == area.base)
        #expect(le64(22) == area.base + area.size - 1)
        #expect(le64(38) == area.size)
    }

    @Test("cloud-hypervisor --pmem maps each file at the top of the 64-bit device area as its own memory slot and boots",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func binary() throws {
        let kernel = try BinaryTests.temporaryFile("pmem.elf", TinyKernel.pvhELF(code: BinaryTests.printAndPowerOff))
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: directory) }
        let image = try file("\(directory)/image", size: 2 << 20)
        let run = try BinaryTests.run(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=64M",
                                       "--pmem", "file=\(image),size=4M", "file=\(directory),size=2M,discard_writes=off,id=scratch"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("_pmem0: \(image), 4194304 bytes at guest 0x"), "\(run.stderr)")
        #expect(run.stderr.contains("scratch: \(directory), 2097152 bytes at guest 0x"), "\(run.stderr)")
        #expect(run.stderr.contains("virtio-pmem at 0000:00:"), "\(run.stderr)")
        #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int == 4 << 20)
        let odd = try BinaryTests.run(["--kernel", kernel, "--pmem", "file=\(image),size=3M"])
        #expect(odd.status != 0 && odd.stderr.contains("not a multiple of 2 MiB"), "\(odd.stderr)")
    }

    @Test("A VM with a pmem file is snapshotted and restored (the file mapped again at the same range, the count going on); with discard_writes=on the snapshot is refused naming it",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func snapshot() throws {
        let work = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        let image = try file(work + "/pmem.img", size: 2 << 20)
        let private_ = try file(work + "/private.img", size: 2 << 20)
        let common = ["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=32M"]

        let discarding = try SnapshotBinaryTests.start(common + ["--api-socket", "path=\(socket)", "--pmem", "file=\(private_),discard_writes=on"],
                                                       log: work + "/discard.log")
        defer { SnapshotBinaryTests.kill(discarding) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 4 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        let refused = try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"], expect: 1)
        #expect(refused.contains("discard_writes=on"), "\(refused)")
        SnapshotBinaryTests.kill(discarding)
        try? FileManager.default.removeItem(atPath: socket)
        try? FileManager.default.removeItem(atPath: serial)

        let first = try SnapshotBinaryTests.start(common + ["--api-socket", "path=\(socket)", "--pmem", "file=\(image)"], log: work + "/first.log")
        defer { SnapshotBinaryTests.kill(first) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(first)
        let before = try #require(SnapshotBinaryTests.counts(SnapshotBinaryTests.contents(serial)))
        let mapped = SnapshotBinaryTests.contents(work + "/first.log").split(separator: "\n").first { $0.contains("_pmem0: \(image)") }
        let range = try #require(mapped.flatMap { $0.range(of: "bytes at guest ") }.map { mapped![$0.upperBound...].prefix(while: { $0 != " " }) })

        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--restore", "source_url=file://\(work)/snap,resume=on"], log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                "\(SnapshotBinaryTests.contents(work + "/restore.log"))")
        SnapshotBinaryTests.kill(restored)
        #expect(SnapshotBinaryTests.contents(work + "/restore.log").contains("_pmem0: \(image), 2097152 bytes at guest \(range)"),
                "\(SnapshotBinaryTests.contents(work + "/restore.log"))")
        let after = try #require(SnapshotBinaryTests.counts(String(SnapshotBinaryTests.contents(serial).dropFirst(start))))
        #expect(after == Array((before.count + 1)...(before.count + after.count)))
    }
}
