import Foundation
import Qcow
import Testing

/// The qcow-tool executable, run as a user runs it.
@Suite("qcow-tool", .enabled(if: Qemu.available, Qemu.reason))
struct QcowToolTests {
    static func tool(_ arguments: [String]) throws -> Qemu.Result {
        try runProcess(CrashSafetyTests.tool, arguments)
    }

    @Test("create, info, check and convert agree with qemu-img")
    func roundTrip() throws {
        guard FileManager.default.isExecutableFile(atPath: CrashSafetyTests.tool) else {
            Issue.record("qcow-tool is not built next to the tests (\(CrashSafetyTests.tool))")
            return
        }
        let folder = try ScratchFolder()
        try writeFile(folder.file("base.raw"), diskPattern(count: 2 << 20, seed: 12))
        let image = folder.file("top.qcow2")
        #expect(try Self.tool(["create", image, "--cluster-size", "4K", "-b", "base.raw", "-F", "raw"]).status == 0)
        try Qemu.run(Qemu.io, ["-c", "write -P 0x61 100k 300k", "-c", "write -z 1m 64k", image])
        let info = try Self.tool(["info", image])
        #expect(info.status == 0)
        for field in ["\"virtual-size\": \(2 << 20)", "\"cluster-size\": 4096", "\"version\": 3",
                      "\"backing-filename\": \"base.raw\"", "\"allocated-clusters\": 75"] {
            #expect(info.output.contains(field), "\(field) in \(info.output)")
        }
        let check = try Self.tool(["check", image])
        #expect(check.status == 0 && check.output.contains("No errors were found"), "\(check.output)")
        #expect(try Self.tool(["convert", image, folder.file("ours.raw")]).status == 0)
        try Qemu.run(Qemu.img, ["convert", "-O", "raw", image, folder.file("theirs.raw")])
        #expect(try readFile(folder.file("ours.raw")) == (try readFile(folder.file("theirs.raw"))))

        // A refcount block zeroed by hand: check reports corruption with exit status 2.
        var bytes = try readFile(image)
        let block = Int(bytes.be64(Int(bytes.be64(48))))
        for index in (block + 10)..<(block + 4096) { bytes[index] = 0 }
        try writeFile(image, bytes)
        let damaged = try Self.tool(["check", image])
        #expect(damaged.status == 2, "\(damaged.output)")
        #expect(damaged.output.contains("errors were found"))
        #expect(try Self.tool(["create", folder.file("bad.qcow2"), "1M", "--cluster-size", "3K"]).status != 0)
    }
}
