import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct ResidentPagesTests {
        @Test func smapsTextIsParsedIntoMappings() {
            let text = """
                55d0c0a00000-55d0c0a80000 r-xp 00010000 fd:01 1234    /usr/bin/cloud-hypervisor
                Size:                512 kB
                Rss:                 300 kB
                Anonymous:             0 kB
                VmFlags: rd ex mr mw me
                55d0c0a80000-55d0c0a90000 r--p 00090000 fd:01 1234    /usr/bin/cloud-hypervisor
                Rss:                  64 kB
                Anonymous:            64 kB
                7f0000000000-7f0000021000 rw-p 00000000 00:00 0
                Rss:                  12 kB
                Anonymous:            12 kB
                7f0000100000-7f0000101000 r--p 00000000 00:1f 77     /tmp/a file (deleted)
                Rss:                   4 kB
                Anonymous:             0 kB
                """
            let mappings = ResidentPages.parseSmaps(Array(text.utf8))
            #expect(mappings.count == 4)
            #expect(mappings[0] == ResidentPages.Mapping(start: 0x55d0_c0a0_0000, end: 0x55d0_c0a8_0000, permissions: "r-xp",
                                                         path: "/usr/bin/cloud-hypervisor", residentKiB: 300, anonymousKiB: 0))
            #expect(mappings[1].anonymousKiB == 64)
            #expect(mappings[2].path == "")
            #expect(mappings[3].path == "/tmp/a file (deleted)")
            #expect(mappings.map(\.isCleanFileMapping) == [true, false, false, true])
        }

        @Test func onlyPrivateReadOnlyFileMappingsWithoutCopiedPagesAreClean() {
            func mapping(_ permissions: String, _ path: String, anonymous: Int = 0) -> ResidentPages.Mapping {
                ResidentPages.Mapping(start: 0, end: 4096, permissions: permissions, path: path, residentKiB: 4, anonymousKiB: anonymous)
            }
            #expect(mapping("r-xp", "/lib/libc.so.6").isCleanFileMapping)
            #expect(mapping("r--p", "/lib/libc.so.6").isCleanFileMapping)
            #expect(!mapping("rw-p", "/lib/libc.so.6").isCleanFileMapping)
            #expect(!mapping("r--s", "/memfd:guest").isCleanFileMapping)
            #expect(!mapping("r--p", "/lib/libc.so.6", anonymous: 4).isCleanFileMapping)
            #expect(!mapping("r--p", "[vvar]").isCleanFileMapping)
            #expect(!mapping("r--p", "").isCleanFileMapping)
        }

        /// A clean private file mapping loses its resident pages and reads the same bytes
        /// afterwards; one whose page was copied on write keeps it, with what was written.
        @Test func releaseDropsCleanPagesAndKeepsCopiedOnes() throws {
            let page = MemoryMapping.pageSize
            let size = 4 * page
            let file = try temporaryFile()
            let content = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            try file.writeAll(content)

            // SAFETY: private read-only mappings of a file of `size` bytes, unmapped below.
            let clean = try #require(mmap(nil, size, PROT_READ, MAP_PRIVATE, file.rawValue, 0))
            #expect(clean != MAP_FAILED)
            defer { munmap(clean, size) }
            let copied = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.rawValue, 0))
            #expect(copied != MAP_FAILED)
            defer { munmap(copied, size) }
            copied.storeBytes(of: 0xAB, toByteOffset: 5, as: UInt8.self)
            #expect(mprotect(copied, size, PROT_READ) == 0)
            var sum = 0
            for offset in stride(from: 0, to: size, by: page) { sum += Int(clean.load(fromByteOffset: offset, as: UInt8.self)) }
            #expect(sum > 0)

            func entry(_ address: UnsafeMutableRawPointer) throws -> ResidentPages.Mapping {
                let start = UInt(bitPattern: address)
                return try #require(try ResidentPages.mappings().first { $0.start == start })
            }
            #expect(try entry(clean).residentKiB == size / 1024)
            #expect(try entry(clean).isCleanFileMapping)
            #expect(try entry(copied).anonymousKiB == page / 1024)
            #expect(try !entry(copied).isCleanFileMapping)

            let released = try ResidentPages.releaseCleanFileMappings()
            #expect(released.mappings >= 1)
            #expect(released.residentKiB >= size / 1024)
            #expect(try entry(clean).residentKiB == 0)
            #expect(Array(UnsafeRawBufferPointer(start: clean, count: size)) == content)
            #expect(copied.load(fromByteOffset: 5, as: UInt8.self) == 0xAB)
            #expect(copied.load(fromByteOffset: 6, as: UInt8.self) == content[6])
        }
    }
}
