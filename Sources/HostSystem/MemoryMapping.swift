import CLinux

/// A range of host virtual memory from `mmap(2)`, unmapped when the object goes away.
///
/// This is what backs guest RAM: anonymous private memory by default, shared memory
/// (`MAP_SHARED`, needed to hand RAM to another process such as vhost-user), a file
/// (memory-backed files, `memfd`), with `MAP_NORESERVE` for large sparse guests and
/// optional huge pages.
public final class MemoryMapping: @unchecked Sendable {
    /// How a mapping is made.
    public struct Options: OptionSet, Sendable {
        /// The option bits.
        public let rawValue: UInt32
        /// Creates options from their bits.
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// `MAP_SHARED` instead of `MAP_PRIVATE`: writes reach the file or other mappings.
        public static let shared = Options(rawValue: 1 << 0)
        /// `MAP_NORESERVE`: do not reserve swap for the whole range up front.
        public static let noReserve = Options(rawValue: 1 << 1)
        /// `MAP_HUGETLB` (anonymous mappings) so the range is backed by huge pages.
        public static let hugePages = Options(rawValue: 1 << 2)
        /// `MAP_POPULATE`: fault every page in now rather than on first touch.
        public static let populate = Options(rawValue: 1 << 3)
        /// Map read-only (`PROT_READ` only).
        public static let readOnly = Options(rawValue: 1 << 4)
    }

    /// The first byte of the mapping.
    public let baseAddress: UnsafeMutableRawPointer
    /// The mapping's length in bytes.
    public let size: Int
    /// The options it was made with.
    public let options: Options
    /// The file it maps, if any (kept open for the mapping's lifetime).
    public let file: OwnedFileDescriptor?
    /// The offset of the mapping in `file`.
    public let fileOffset: Int64

    /// Maps `size` bytes of anonymous memory (zero-filled).
    ///
    /// The corresponding system call is `mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_ANONYMOUS|...)`.
    public convenience init(anonymous size: Int, options: Options = []) throws(SystemError) {
        try self.init(size: size, options: options, file: nil, offset: 0)
    }

    /// Maps `size` bytes of `file` from `offset` (which must be page-aligned).
    public convenience init(file: OwnedFileDescriptor, offset: Int64 = 0, size: Int, options: Options = [.shared]) throws(SystemError) {
        try self.init(size: size, options: options, file: file, offset: offset)
    }

    private init(size: Int, options: Options, file: OwnedFileDescriptor?, offset: Int64) throws(SystemError) {
        guard size > 0 else { throw SystemError(call: "mmap(size 0)", errno: EINVAL) }
        var flags: Int32 = options.contains(.shared) ? MAP_SHARED : MAP_PRIVATE
        if file == nil { flags |= MAP_ANONYMOUS }
        if options.contains(.noReserve) { flags |= MAP_NORESERVE }
        if options.contains(.hugePages) { flags |= MAP_HUGETLB }
        if options.contains(.populate) { flags |= MAP_POPULATE }
        let protection = options.contains(.readOnly) ? PROT_READ : PROT_READ | PROT_WRITE
        // Anonymous memory of a huge page or more starts on a huge-page boundary (as QEMU
        // places guest RAM): transparent huge pages only back aligned 2 MiB ranges, and KVM
        // maps guest RAM with 2 MiB pages only where host and guest addresses agree modulo
        // 2 MiB. Kernels before 6.7 do not align large anonymous mappings themselves.
        let align = file == nil && !options.contains(.hugePages) && size >= Self.hugePageSize ? Self.hugePageSize : 0
        let result = mmap(nil, size + align, protection, flags, file?.rawValue ?? -1, off_t(offset))
        guard let result, result != UnsafeMutableRawPointer(bitPattern: -1) else {
            let what = options.contains(.hugePages) ? "mmap(\(size) bytes, huge pages)" : "mmap(\(size) bytes)"
            throw SystemError.current(what)
        }
        baseAddress = align == 0 ? result : Self.trim(result, size: size, alignment: align)
        self.size = size
        self.options = options
        self.file = file
        fileOffset = offset
    }

    deinit {
        _ = munmap(baseAddress, size)
    }

    /// 2 MiB: the x86-64 (and arm64 4K-granule) transparent huge page size.
    public static let hugePageSize = 2 << 20

    /// Unmaps the head and tail of `mapping` (`size + alignment` bytes) around its first
    /// `alignment`-aligned stretch of `size` bytes, and returns that stretch's start.
    private static func trim(_ mapping: UnsafeMutableRawPointer, size: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let address = UInt(bitPattern: mapping)
        let head = Int((UInt(alignment) - address % UInt(alignment)) % UInt(alignment))
        if head > 0 { _ = munmap(mapping, head) }
        let tail = alignment - head
        if tail > 0 { _ = munmap(mapping + head + size, tail) }
        return mapping + head
    }

    /// The whole mapping as a raw buffer. Valid while this object lives.
    public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress, count: size)
    }

    /// Gives advice on a sub-range (`madvise(2)`), for example `MADV_DONTNEED` to drop pages
    /// or `MADV_MERGEABLE` for KSM.
    public func advise(offset: Int, length: Int, advice: Int32) throws(SystemError) {
        guard offset >= 0, length >= 0, offset <= size, length <= size - offset else {
            throw SystemError(call: "madvise(outside the mapping)", errno: EINVAL)
        }
        _ = try checked("madvise") { madvise(baseAddress + offset, length, advice) }
    }

    /// Hands `length` bytes from `offset` back to the host: a shared mapping of a file (a
    /// `memfd`, a memory-backed file) first has the range punched out of the file, then the
    /// range is dropped with `MADV_DONTNEED`; the next access reads zeros (anonymous or shared
    /// memory) or the file's bytes again (a private file mapping keeps its file untouched).
    /// This is what a balloon does with the pages the guest gives up.
    ///
    /// The corresponding system calls are `fallocate(PUNCH_HOLE|KEEP_SIZE)` and `madvise(MADV_DONTNEED)`.
    public func discard(offset: Int, length: Int) throws(SystemError) {
        guard offset >= 0, length >= 0, offset <= size, length <= size - offset else {
            throw SystemError(call: "discard(outside the mapping)", errno: EINVAL)
        }
        guard length > 0 else { return }
        if let file, options.contains(.shared) {
            let mode = Self.fallocatePunchHole | Self.fallocateKeepSize
            _ = try checked("fallocate(punch hole, \(length) bytes at file offset \(fileOffset + Int64(offset)))") {
                clinux_fallocate(file.rawValue, mode, fileOffset + Int64(offset), Int64(length))
            }
        }
        try advise(offset: offset, length: length, advice: MADV_DONTNEED)
    }

    /// `FALLOC_FL_KEEP_SIZE`.
    static let fallocateKeepSize: Int32 = 0x01
    /// `FALLOC_FL_PUNCH_HOLE`.
    static let fallocatePunchHole: Int32 = 0x02

    /// The host's page size.
    public static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
}
