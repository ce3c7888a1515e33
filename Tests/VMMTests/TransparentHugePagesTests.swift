import Glibc
import HostSystem
import Testing
@testable import VMM

/// `--memory thp=on|off`: guest RAM marked for transparent huge pages (`MADV_HUGEPAGE`, the
/// `hg` flag in `/proc/self/smaps`) unless `thp=off` or `hugepages=on`, as in Cloud Hypervisor.
@Suite(.enabled(if: access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0))
struct TransparentHugePagesTests {
    /// The `VmFlags` of the mapping that holds `address`, from `/proc/self/smaps` (each
    /// entry's last field, so the first one after the entry's header line is its own).
    static func flags(at address: UnsafeMutableRawPointer) throws -> [Substring] {
        let target = UInt(bitPattern: address)
        let file = try OwnedFileDescriptor(path: "/proc/self/smaps", flags: O_RDONLY)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try chunk.withUnsafeMutableBytes { (buffer) throws(SystemError) in try file.read(into: buffer) }
            if count == 0 { break }
            bytes += chunk[0..<count]
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        let header = lines.firstIndex { line in
            let bounds = line.prefix { $0 != " " }.split(separator: "-").compactMap { UInt($0, radix: 16) }
            return bounds.count == 2 && bounds[0] <= target && target < bounds[1]
        }
        guard let header,
              let line = lines[header...].first(where: { $0.hasPrefix("VmFlags:") }) else { return [] }
        return Array(line.split(separator: " ").dropFirst())
    }

    @Test(arguments: [("size=4M", true), ("size=4M,thp=on", true), ("size=4M,thp=off", false),
                      ("size=4M,hugepages=on", false)])
    func guestRAMIsAdvisedAsTheOptionSays(option: String, advised: Bool) throws {
        let config = try MemoryConfig.parse(option)
        let mapping = try MemoryMapping(anonymous: 4 << 20, options: [.noReserve])
        TransparentHugePages.apply(config, to: mapping, logger: nil)
        let flags = try Self.flags(at: mapping.baseAddress)
        #expect(!flags.isEmpty)
        #expect(flags.contains("hg") == advised)
    }
}
