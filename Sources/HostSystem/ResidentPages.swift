import CLinux

/// The process's own resident pages, read from `/proc/self/smaps`, and a way to give back the
/// clean pages of the files it maps (its code and read-only data) once start-up is over.
///
/// A process start touches much code it never runs again: the dynamic loader's relocation
/// pass, the language runtime's set-up, argument parsing, building the VM. Each of those
/// pages stays mapped, and counted in the process's resident set, until the process exits,
/// although the page cache holds it anyway (shared with every other process mapping the same
/// file). `releaseCleanFileMappings()` drops these mappings' page-table entries
/// (`madvise(MADV_DONTNEED)`) so that what stays resident is what the process touches
/// afterwards; a page used again is mapped again from the page cache on its next access (a
/// minor fault, no disk read while the page stays cached).
///
/// Only private, non-writable, file-backed mappings that hold no anonymous (copied-on-write)
/// page are touched: dropping a copied page of a private mapping would bring back the file's
/// bytes (undoing a relocation), so mappings with one are left alone. Nothing is freed from
/// the page cache and nothing changes in what a memory cgroup is charged for these files.
public enum ResidentPages {
    /// One mapping of `/proc/PID/smaps`: its range, permissions, path and resident sizes.
    public struct Mapping: Equatable, Sendable {
        /// The first address.
        public var start: UInt
        /// The address past the end.
        public var end: UInt
        /// The four permission characters (`r-xp`, `rw-s`, ...).
        public var permissions: String
        /// The file or pseudo-path (`[heap]`), or empty for anonymous memory.
        public var path: String
        /// `Rss:` in KiB.
        public var residentKiB: Int
        /// `Anonymous:` in KiB: pages of this mapping that no file backs (copied on write).
        public var anonymousKiB: Int

        /// Creates a mapping record.
        public init(start: UInt, end: UInt, permissions: String, path: String, residentKiB: Int = 0, anonymousKiB: Int = 0) {
            self.start = start
            self.end = end
            self.permissions = permissions
            self.path = path
            self.residentKiB = residentKiB
            self.anonymousKiB = anonymousKiB
        }

        /// Whether dropping its pages only unmaps clean file pages: a private, non-writable
        /// mapping of a file with no anonymous page.
        public var isCleanFileMapping: Bool {
            let flags = Array(permissions.utf8)
            return flags.count == 4 && flags[1] != UInt8(ascii: "w") && flags[3] == UInt8(ascii: "p")
                && path.utf8.first == UInt8(ascii: "/") && anonymousKiB == 0
        }
    }

    /// Parses the text of `/proc/PID/smaps`: one header line per mapping
    /// (`start-end perms offset dev inode [path]`) followed by `Field: value kB` lines. Lines
    /// it does not understand are skipped.
    public static func parseSmaps(_ text: some Sequence<UInt8>) -> [Mapping] {
        var mappings: [Mapping] = []
        var line: [UInt8] = []
        func finish() {
            defer { line.removeAll(keepingCapacity: true) }
            guard !line.isEmpty else { return }
            if let header = parseHeader(line) {
                mappings.append(header)
                return
            }
            guard !mappings.isEmpty, let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
            let name = line[..<colon]
            let digits = line[(colon + 1)...].drop { $0 == UInt8(ascii: " ") }.prefix { $0 >= 0x30 && $0 <= 0x39 }
            guard let value = Int(String(decoding: digits, as: UTF8.self)) else { return }
            if name.elementsEqual("Rss".utf8) { mappings[mappings.count - 1].residentKiB = value }
            if name.elementsEqual("Anonymous".utf8) { mappings[mappings.count - 1].anonymousKiB = value }
        }
        for byte in text {
            if byte == UInt8(ascii: "\n") { finish() } else { line.append(byte) }
        }
        finish()
        return mappings
    }

    /// A header line's mapping, or nil for a field line.
    static func parseHeader(_ line: [UInt8]) -> Mapping? {
        let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count >= 5, let dash = fields[0].firstIndex(of: UInt8(ascii: "-")),
              let start = UInt(String(decoding: fields[0][..<dash], as: UTF8.self), radix: 16),
              let end = UInt(String(decoding: fields[0][(dash + 1)...], as: UTF8.self), radix: 16),
              fields[1].count == 4 else { return nil }
        let path = fields.count == 6 ? String(decoding: fields[5].drop { $0 == UInt8(ascii: " ") }, as: UTF8.self) : ""
        return Mapping(start: start, end: end, permissions: String(decoding: fields[1], as: UTF8.self), path: path)
    }

    /// This process's mappings, from `/proc/self/smaps`.
    public static func mappings() throws(SystemError) -> [Mapping] {
        let file = try OwnedFileDescriptor(path: "/proc/self/smaps", flags: O_RDONLY | O_CLOEXEC)
        var text: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let count = try file.read(into: chunk)
            if count == 0 { break }
            text += chunk[0..<count]
        }
        return parseSmaps(text)
    }

    /// What a release did.
    public struct Released: Equatable, Sendable {
        /// The mappings whose pages were dropped.
        public var mappings: Int
        /// Their resident KiB before.
        public var residentKiB: Int
    }

    /// Drops the resident pages of every clean file mapping (see ``Mapping/isCleanFileMapping``)
    /// from this process's page tables. Safe at any time: a page is mapped again from the
    /// page cache when next used. Mappings the kernel refuses (locked ones) are skipped.
    @discardableResult
    public static func releaseCleanFileMappings() throws(SystemError) -> Released {
        var released = Released(mappings: 0, residentKiB: 0)
        for mapping in try mappings() where mapping.isCleanFileMapping && mapping.residentKiB > 0 {
            // SAFETY: the range is one of this process's mappings, private, not writable and
            // without copied pages: dropping its page-table entries loses no data, and the
            // next access maps the file's page again.
            guard let address = UnsafeMutableRawPointer(bitPattern: mapping.start),
                  madvise(address, Int(mapping.end - mapping.start), MADV_DONTNEED) == 0 else { continue }
            released.mappings += 1
            released.residentKiB += mapping.residentKiB
        }
        return released
    }
}
