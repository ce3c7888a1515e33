/// A flattened device tree (DTB, devicetree specification v0.4 chapter 5) encoder with no
/// dependency: nodes and properties are written in order, and `finish()` lays out the
/// header, the memory reservation block, the structure block and the strings block.
///
/// ```swift
/// var fdt = FDTWriter()
/// try fdt.beginNode("")
/// try fdt.property("#address-cells", u32: 2)
/// try fdt.beginNode("chosen")
/// try fdt.property("bootargs", string: "console=ttyAMA0")
/// try fdt.endNode()
/// try fdt.endNode()
/// let blob = try fdt.finish()
/// ```
///
/// All integers in a blob are big-endian. Misuse (a property after a subnode, a duplicate
/// name, an unbalanced `endNode`, a reused phandle) throws instead of writing a tree the
/// kernel would misread.
public struct FDTWriter: Sendable {
    /// The blob magic.
    public static let magic: UInt32 = 0xD00D_FEED
    /// The format version written (17) and the oldest compatible one (16).
    public static let version: UInt32 = 17
    /// The oldest version a reader of this blob must understand.
    public static let lastCompatibleVersion: UInt32 = 16
    /// Size of the header.
    public static let headerSize = 40

    static let tokenBeginNode: UInt32 = 1
    static let tokenEndNode: UInt32 = 2
    static let tokenProperty: UInt32 = 3
    static let tokenEnd: UInt32 = 9

    /// Address ranges the guest must not use, written to the memory reservation block.
    public var reservations: [(address: UInt64, size: UInt64)]
    /// The physical ID of the boot CPU (header field `boot_cpuid_phys`).
    public var bootCPUID: UInt32

    private var structure: [UInt8] = []
    private var strings: [UInt8] = []
    private var stringOffsets: [String: UInt32] = [:]
    /// Per open node: the names of its properties and children, and whether a child was begun.
    private var open: [(properties: Set<String>, children: Set<String>, hasChildren: Bool)] = []
    private var finishedRoot = false
    private var phandles: Set<UInt32> = []

    /// An empty writer with optional reserved ranges and boot CPU.
    public init(reservations: [(address: UInt64, size: UInt64)] = [], bootCPUID: UInt32 = 0) {
        self.reservations = reservations
        self.bootCPUID = bootCPUID
    }

    /// How deep the writer is: 0 before the root node and after it is closed.
    public var depth: Int { open.count }

    /// Opens node `name` ("" for the root, else `node-name` or `node-name@unit-address`).
    public mutating func beginNode(_ name: String) throws(AArch64Error) {
        if open.isEmpty {
            guard !finishedRoot else { throw .fdtMisuse("node \"\(name)\" begun after the root node was closed") }
            guard name.isEmpty else { throw .fdtInvalidName(name, reason: "the root node's name must be empty") }
        } else {
            try Self.checkNodeName(name)
            guard !open[open.count - 1].children.contains(name) else {
                throw .fdtMisuse("node \"\(name)\" appears twice in the same parent")
            }
            open[open.count - 1].children.insert(name)
            open[open.count - 1].hasChildren = true
        }
        appendToken(Self.tokenBeginNode)
        structure.append(contentsOf: Array(name.utf8) + [0])
        pad()
        open.append((properties: [], children: [], hasChildren: false))
    }

    /// Closes the innermost open node.
    public mutating func endNode() throws(AArch64Error) {
        guard !open.isEmpty else { throw .fdtMisuse("endNode without an open node") }
        open.removeLast()
        appendToken(Self.tokenEndNode)
        if open.isEmpty { finishedRoot = true }
    }

    /// Adds property `name` with raw `value` bytes to the innermost open node.
    public mutating func property(_ name: String, bytes value: [UInt8]) throws(AArch64Error) {
        try Self.checkPropertyName(name)
        guard let current = open.last else { throw .fdtMisuse("property \"\(name)\" outside any node") }
        guard !current.hasChildren else {
            throw .fdtMisuse("property \"\(name)\" after a subnode; properties come first")
        }
        guard !current.properties.contains(name) else { throw .fdtMisuse("property \"\(name)\" set twice in one node") }
        guard let length = UInt32(exactly: value.count) else { throw .fdtMisuse("property \"\(name)\" is over 4 GiB") }
        open[open.count - 1].properties.insert(name)
        appendToken(Self.tokenProperty)
        appendToken(length)
        appendToken(stringOffset(name))
        structure.append(contentsOf: value)
        pad()
    }

    /// An empty property (a boolean such as `interrupt-controller`).
    public mutating func property(_ name: String) throws(AArch64Error) { try property(name, bytes: []) }

    /// One 32-bit cell.
    public mutating func property(_ name: String, u32 value: UInt32) throws(AArch64Error) {
        try property(name, cells: [value])
    }

    /// One 64-bit value (two cells).
    public mutating func property(_ name: String, u64 value: UInt64) throws(AArch64Error) {
        try property(name, cells64: [value])
    }

    /// An array of 32-bit cells.
    public mutating func property(_ name: String, cells: [UInt32]) throws(AArch64Error) {
        try property(name, bytes: cells.flatMap(Self.bigEndian))
    }

    /// An array of 64-bit values, two cells each.
    public mutating func property(_ name: String, cells64: [UInt64]) throws(AArch64Error) {
        try property(name, bytes: cells64.flatMap(Self.bigEndian))
    }

    /// A NUL-terminated string.
    public mutating func property(_ name: String, string: String) throws(AArch64Error) {
        try property(name, strings: [string])
    }

    /// A string list: each string NUL-terminated, one after the other (`compatible`).
    public mutating func property(_ name: String, strings: [String]) throws(AArch64Error) {
        var bytes: [UInt8] = []
        for string in strings {
            guard !string.utf8.contains(0) else {
                throw .fdtInvalidName(name, reason: "its string value \"\(string)\" contains a NUL byte")
            }
            bytes += Array(string.utf8) + [0]
        }
        try property(name, bytes: bytes)
    }

    /// The node's `phandle`: a non-zero value other than 0xffffffff, unique in the tree.
    public mutating func phandle(_ value: UInt32) throws(AArch64Error) {
        guard value != 0, value != UInt32.max else { throw .fdtMisuse("phandle \(hex(value)) is reserved") }
        guard !phandles.contains(value) else { throw .fdtMisuse("phandle \(value) given to two nodes") }
        try property("phandle", u32: value)
        phandles.insert(value)
    }

    /// The finished blob. The root node must have been opened and closed.
    public func finish() throws(AArch64Error) -> [UInt8] {
        guard finishedRoot, open.isEmpty else {
            throw .fdtMisuse(open.isEmpty ? "no root node was written" : "\(open.count) node(s) still open at finish")
        }
        var structureBlock = structure
        structureBlock += Self.bigEndian(Self.tokenEnd)
        var reservationBlock: [UInt8] = []
        for range in reservations + [(address: 0, size: 0)] {
            reservationBlock += Self.bigEndian(range.address) + Self.bigEndian(range.size)
        }
        let reservationOffset = Self.headerSize    // 40: already 8-byte aligned
        let structureOffset = reservationOffset + reservationBlock.count
        let stringsOffset = structureOffset + structureBlock.count
        let total = stringsOffset + strings.count
        guard let totalSize = UInt32(exactly: total) else { throw .fdtTooLarge(size: total, max: Int(UInt32.max)) }
        var blob: [UInt8] = []
        blob.reserveCapacity(total)
        for field in [Self.magic, totalSize, UInt32(structureOffset), UInt32(stringsOffset), UInt32(reservationOffset),
                      Self.version, Self.lastCompatibleVersion, bootCPUID, UInt32(strings.count), UInt32(structureBlock.count)] {
            blob += Self.bigEndian(field)
        }
        blob += reservationBlock
        blob += structureBlock
        blob += strings
        return blob
    }

    // MARK: Helpers

    private mutating func appendToken(_ value: UInt32) { structure += Self.bigEndian(value) }

    private mutating func pad() {
        while structure.count % 4 != 0 { structure.append(0) }
    }

    private mutating func stringOffset(_ name: String) -> UInt32 {
        if let offset = stringOffsets[name] { return offset }
        let offset = UInt32(strings.count)
        strings += Array(name.utf8) + [0]
        stringOffsets[name] = offset
        return offset
    }

    static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    /// Node names: 1-31 characters of `[0-9a-zA-Z,._+-]`, then optionally `@` and a unit
    /// address of the same characters.
    static func checkNodeName(_ name: String) throws(AArch64Error) {
        let parts = name.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let base = parts[0]
        guard !base.isEmpty, base.utf8.count <= 31 else {
            throw .fdtInvalidName(name, reason: "a node name needs 1 to 31 characters before any '@'")
        }
        let allowed = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,._+-".utf8)
        guard base.utf8.allSatisfy(allowed.contains), base.utf8.first.map({ !(0x30...0x39).contains($0) }) ?? false else {
            throw .fdtInvalidName(name, reason: "a node name starts with a letter and holds only [0-9a-zA-Z,._+-]")
        }
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].utf8.allSatisfy(allowed.contains) else {
                throw .fdtInvalidName(name, reason: "the unit address after '@' must be non-empty and hold only [0-9a-zA-Z,._+-]")
            }
        }
    }

    /// Property names: 1-31 characters of `[0-9a-zA-Z,._+?#-]`.
    static func checkPropertyName(_ name: String) throws(AArch64Error) {
        let allowed = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,._+?#-".utf8)
        guard !name.isEmpty, name.utf8.count <= 31, name.utf8.allSatisfy(allowed.contains) else {
            throw .fdtInvalidName(name, reason: "a property name needs 1 to 31 characters of [0-9a-zA-Z,._+?#-]")
        }
    }
}
