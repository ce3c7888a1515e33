/// Something that encodes itself as ACPI Machine Language (ACPI 6.x chapter 20): a data
/// object, a named object, a statement or an expression.
///
/// Objects are plain values; encoding cannot fail because every constructor validates
/// its input (throwing initialisers for runtime values, preconditions for literals).
public protocol AMLConvertible: Sendable {
    /// Appends this object's AML encoding to `bytes`.
    func appendAML(to bytes: inout [UInt8])
}

extension AMLConvertible {
    /// This object's AML encoding on its own.
    public var amlBytes: [UInt8] {
        var bytes: [UInt8] = []
        appendAML(to: &bytes)
        return bytes
    }
}

/// Collects the AML objects of a scope, device, method or block written one per line.
@resultBuilder
public enum AMLBuilder {
    /// Combines the lines of a block.
    public static func buildBlock(_ parts: [any AMLConvertible]...) -> [any AMLConvertible] { parts.flatMap { $0 } }
    /// One object on a line.
    public static func buildExpression(_ object: any AMLConvertible) -> [any AMLConvertible] { [object] }
    /// A list of objects on a line (for example generated per vCPU).
    public static func buildExpression(_ objects: [any AMLConvertible]) -> [any AMLConvertible] { objects }
    /// An `if` without `else`.
    public static func buildOptional(_ part: [any AMLConvertible]?) -> [any AMLConvertible] { part ?? [] }
    /// The first branch of an `if`/`else`.
    public static func buildEither(first part: [any AMLConvertible]) -> [any AMLConvertible] { part }
    /// The second branch of an `if`/`else`.
    public static func buildEither(second part: [any AMLConvertible]) -> [any AMLConvertible] { part }
    /// A `for` loop.
    public static func buildArray(_ parts: [[any AMLConvertible]]) -> [any AMLConvertible] { parts.flatMap { $0 } }
}

/// The namespace of the AML encoder's object types (`AML.Device`, `AML.Method`, ...).
public enum AML {
    /// The largest value a PkgLength can encode (2^28 - 1).
    public static let maximumPackageLength = (1 << 28) - 1

    /// The PkgLength encoding (ACPI 6.x section 20.2.4) of an object whose contents after
    /// the PkgLength are `contentLength` bytes. The encoded value counts the PkgLength's
    /// own bytes: one byte for totals up to 63, otherwise 2 to 4 bytes where the lead byte
    /// holds the count of following bytes in bits 7-6 and the low nibble of the value.
    public static func packageLength(contentLength: Int) -> [UInt8] {
        for size in 1...4 {
            let total = contentLength + size
            if size == 1, total <= 0x3f { return [UInt8(total)] }
            if size > 1, total < 1 << (4 + 8 * (size - 1)) { return encodeMultiBytePackageLength(total, size: size) }
        }
        preconditionFailure("an AML object of \(contentLength) bytes exceeds the PkgLength limit of \(maximumPackageLength)")
    }

    /// The PkgLength-style encoding of a raw value that does not count itself, as used for
    /// the bit widths of field elements.
    public static func rawPackageLength(_ value: Int) -> [UInt8] {
        precondition(value >= 0 && value <= maximumPackageLength, "field width \(value) is outside 0...\(maximumPackageLength) bits")
        if value <= 0x3f { return [UInt8(value)] }
        let size = value < 1 << 12 ? 2 : value < 1 << 20 ? 3 : 4
        return encodeMultiBytePackageLength(value, size: size)
    }

    /// `value` in `size` PkgLength bytes (2...4).
    private static func encodeMultiBytePackageLength(_ value: Int, size: Int) -> [UInt8] {
        var bytes = [UInt8((size - 1) << 6) | UInt8(value & 0xf)]
        for index in 1..<size { bytes.append(UInt8(truncatingIfNeeded: value >> (4 + 8 * (index - 1)))) }
        return bytes
    }

    /// Appends `lead` opcode bytes, then the PkgLength of `content`, then `content`.
    static func appendPackage(_ lead: [UInt8], _ content: [UInt8], to bytes: inout [UInt8]) {
        bytes += lead
        bytes += packageLength(contentLength: content.count)
        bytes += content
    }

    /// The encoding of `objects` one after the other.
    static func encode(_ objects: [any AMLConvertible]) -> [UInt8] {
        var bytes: [UInt8] = []
        for object in objects { object.appendAML(to: &bytes) }
        return bytes
    }

    /// Already encoded AML, appended verbatim (an escape hatch for constructs the encoder
    /// does not model).
    public struct Raw: AMLConvertible, Hashable {
        /// The bytes appended.
        public let bytes: [UInt8]

        /// Wraps already encoded AML.
        public init(_ bytes: [UInt8]) { self.bytes = bytes }

        /// Appends the bytes verbatim.
        public func appendAML(to bytes: inout [UInt8]) { bytes += self.bytes }
    }
}

/// AML opcodes (ACPI 6.x section 20.3), by name.
enum AMLOpcode {
    static let zero: UInt8 = 0x00
    static let one: UInt8 = 0x01
    static let name: UInt8 = 0x08
    static let bytePrefix: UInt8 = 0x0a
    static let wordPrefix: UInt8 = 0x0b
    static let dwordPrefix: UInt8 = 0x0c
    static let stringPrefix: UInt8 = 0x0d
    static let qwordPrefix: UInt8 = 0x0e
    static let scope: UInt8 = 0x10
    static let buffer: UInt8 = 0x11
    static let package: UInt8 = 0x12
    static let variablePackage: UInt8 = 0x13
    static let method: UInt8 = 0x14
    static let dualNamePrefix: UInt8 = 0x2e
    static let multiNamePrefix: UInt8 = 0x2f
    static let extendedPrefix: UInt8 = 0x5b
    static let rootChar: UInt8 = 0x5c
    static let parentPrefix: UInt8 = 0x5e
    static let local0: UInt8 = 0x60
    static let arg0: UInt8 = 0x68
    static let store: UInt8 = 0x70
    static let increment: UInt8 = 0x75
    static let decrement: UInt8 = 0x76
    static let not: UInt8 = 0x80
    static let notify: UInt8 = 0x86
    static let sizeOf: UInt8 = 0x87
    static let logicalAnd: UInt8 = 0x90
    static let logicalOr: UInt8 = 0x91
    static let logicalNot: UInt8 = 0x92
    static let logicalEqual: UInt8 = 0x93
    static let logicalGreater: UInt8 = 0x94
    static let logicalLess: UInt8 = 0x95
    static let ifOp: UInt8 = 0xa0
    static let elseOp: UInt8 = 0xa1
    static let whileOp: UInt8 = 0xa2
    static let returnOp: UInt8 = 0xa4
    static let breakOp: UInt8 = 0xa5
    static let ones: UInt8 = 0xff
    // Second bytes after the extended prefix 0x5B.
    static let mutex: UInt8 = 0x01
    static let acquire: UInt8 = 0x23
    static let release: UInt8 = 0x27
    static let operationRegion: UInt8 = 0x80
    static let field: UInt8 = 0x81
    static let device: UInt8 = 0x82
}
