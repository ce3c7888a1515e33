import Testing
import FoundationEssentials
import GuestMemory
@testable import Arch

/// Checks against a real Debian kernel: `ARCH_TEST_VMLINUZ` (a bzImage) and `ARCH_TEST_VMLINUX`
/// (the ELF extracted from it: the xz payload after the first `FD 37 7A 58 5A 00`), by default
/// the ones the nested bench caches (`Scripts/nested/prepare.sh`, which `Scripts/test.sh` runs
/// first): `$CH_NESTED_CACHE`, or `${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/nested`.
/// Skipped, with the reason shown, when the files are absent, unless `CH_REQUIRE_REAL_KERNEL=1`
/// (set by .ci/run) makes that a failure.
enum RealKernel {
    static let environment = ProcessInfo.processInfo.environment
    static let cache = environment["CH_NESTED_CACHE"]
        ?? ((environment["XDG_CACHE_HOME"] ?? ((environment["HOME"] ?? "/root") + "/.cache")) + "/cloud-hypervisor-swift/nested")
    static let bzImagePath = environment["ARCH_TEST_VMLINUZ"] ?? cache + "/vmlinuz"
    static let elfPath = environment["ARCH_TEST_VMLINUX"] ?? cache + "/vmlinux"
    static let required = environment["CH_REQUIRE_REAL_KERNEL"] == "1"

    static func bytes(_ path: String) -> [UInt8]? {
        (try? Data(contentsOf: URL(fileURLWithPath: path))).map { [UInt8]($0) }
    }
}

@Suite("Real Debian kernel (optional)")
struct RealKernelTests {
    @Test(.enabled(if: RealKernel.required || FileManager.default.fileExists(atPath: RealKernel.bzImagePath),
                   "no bzImage at ARCH_TEST_VMLINUZ or the nested bench's cache (run Scripts/nested/prepare.sh)"))
    func debianBzImageLoads() throws {
        let image = try #require(RealKernel.bytes(RealKernel.bzImagePath))
        let bzImage = try BzImageLoader.parse(image)
        #expect(bzImage.header.version >= 0x020C)
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 256 << 20)], options: [.noReserve])
        let result = try BzImageLoader.load(image, into: memory)
        #expect(result.entry == GuestAddress(0x100200))
        #expect(try memory.readBytes(count: 64, at: GuestAddress(0x100000)) == Array(image[bzImage.setupSize..<(bzImage.setupSize + 64)]))
    }

    @Test(.enabled(if: RealKernel.required || FileManager.default.fileExists(atPath: RealKernel.elfPath),
                   "no vmlinux at ARCH_TEST_VMLINUX or the nested bench's cache (run Scripts/nested/prepare.sh)"))
    func debianVmlinuxHasAPVHEntry() throws {
        let image = try #require(RealKernel.bytes(RealKernel.elfPath))
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 256 << 20)], options: [.noReserve])
        let result = try ELFLoader.load(image, into: memory)
        let pvh = try #require(result.pvhEntry)
        #expect(pvh.rawValue >= 0x100_0000 && pvh.rawValue < result.loadEnd.rawValue)
        #expect(result.loadStart == GuestAddress(0x100_0000))
    }
}
