import Foundation
import HypervisorTesting
import Testing

/// cloud-hypervisor drops the clean file pages its start-up touched once the VM has booted,
/// and the guest runs on undisturbed.
@Suite("cloud-hypervisor start-up pages")
struct StartupPagesBinaryTests {
    @Test("After boot the VMM releases its clean file pages and the guest keeps counting",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func releasedAfterBoot() throws {
        let work = NSTemporaryDirectory() + "ch-startup-pages-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", log = work + "/vmm.log"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))

        let vmm = try SnapshotBinaryTests.start(["-vv", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                 "--memory", "size=32M"], log: log)
        defer { SnapshotBinaryTests.kill(vmm) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(log).contains("KiB of clean file pages") }, seconds: 60),
                "the release is logged: \(SnapshotBinaryTests.contents(log))")
        let line = SnapshotBinaryTests.contents(log).split(separator: "\n").first { $0.contains("KiB of clean file pages") } ?? ""
        let words = line.split(separator: " ")
        let released = words.firstIndex(of: "released").flatMap { $0 + 1 < words.count ? Int(words[$0 + 1]) : nil }
        #expect((released ?? 0) > 0, "some pages were released: \(line)")
        let before = SnapshotBinaryTests.contents(serial).utf8.count
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= before + 8 }, seconds: 60),
                "the guest counts on after the release: \(SnapshotBinaryTests.contents(serial))")
    }
}
