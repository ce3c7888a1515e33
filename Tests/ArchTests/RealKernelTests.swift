import Testing
import FoundationEssentials
import GuestMemory
@testable import Arch

/// Optional checks against a real Debian kernel: `ARCH_TEST_VMLINUZ` (a bzImage) and
/// `ARCH_TEST_VMLINUX` (the ELF extracted from it: the xz payload after the first
/// `FD 37 7A 58 5A 00`), defaulting to `/tmp/archk/vmlinuz` and `/tmp/archk/vmlinux`.
/// Skipped, with the reason shown, when the files are absent.
enum RealKernel {
    static let bzImagePath = ProcessInfo.processInfo.environment["ARCH_TEST_VMLINUZ"] ?? "/tmp/archk/vmlinuz"
    static let elfPath = ProcessInfo.processInfo.environment["ARCH_TEST_VMLINUX"] ?? "/tmp/archk/vmlinux"

    static func bytes(_ path: String) -> [UInt8]? {
        (try? Data(contentsOf: URL(fileURLWithPath: path))).map { [UInt8]($0) }
    }
}

@Suite("Real Debian kernel (optional)")
struct RealKernelTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: RealKernel.bzImagePath),
                   "no bzImage at ARCH_TEST_VMLINUZ or /tmp/archk/vmlinuz (apt-get download linux-image-*-amd64)"))
    func debianBzImageLoads() throws {
        let image = try #require(RealKernel.bytes(RealKernel.bzImagePath))
        let bzImage = try BzImageLoader.parse(image)
        #expect(bzImage.header.version >= 0x020C)
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 256 << 20)], options: [.noReserve])
        let result = try BzImageLoader.load(image, into: memory)
        #expect(result.entry == GuestAddress(0x100200))
        #expect(try memory.readBytes(count: 64, at: GuestAddress(0x100000)) == Array(image[bzImage.setupSize..<(bzImage.setupSize + 64)]))
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: RealKernel.elfPath),
                   "no vmlinux at ARCH_TEST_VMLINUX or /tmp/archk/vmlinux (decompress a vmlinuz's xz payload)"))
    func debianVmlinuxHasAPVHEntry() throws {
        let image = try #require(RealKernel.bytes(RealKernel.elfPath))
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 256 << 20)], options: [.noReserve])
        let result = try ELFLoader.load(image, into: memory)
        let pvh = try #require(result.pvhEntry)
        #expect(pvh.rawValue >= 0x100_0000 && pvh.rawValue < result.loadEnd.rawValue)
        #expect(result.loadStart == GuestAddress(0x100_0000))
    }
}
