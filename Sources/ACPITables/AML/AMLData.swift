extension AML {
    /// Appends the shortest encoding of an integer constant: `ZeroOp` (0x00), `OneOp`
    /// (0x01), `OnesOp` (0xFF) for all 64 bits set, otherwise a `BytePrefix` (0x0A),
    /// `WordPrefix` (0x0B), `DWordPrefix` (0x0C) or `QWordPrefix` (0x0E) constant.
    ///
    /// `Ones` means all ones in the table's integer width; every table this module builds
    /// has a revision of 2 or more, where integers are 64 bits wide.
    public static func appendInteger(_ value: UInt64, to bytes: inout [UInt8]) {
        switch value {
        case 0: bytes.append(AMLOpcode.zero)
        case 1: bytes.append(AMLOpcode.one)
        case .max: bytes.append(AMLOpcode.ones)
        case 0...0xff: bytes += [AMLOpcode.bytePrefix, UInt8(value)]
        case 0...0xffff:
            bytes.append(AMLOpcode.wordPrefix)
            bytes.appendLittleEndian(UInt16(value))
        case 0...0xffff_ffff:
            bytes.append(AMLOpcode.dwordPrefix)
            bytes.appendLittleEndian(UInt32(value))
        default:
            bytes.append(AMLOpcode.qwordPrefix)
            bytes.appendLittleEndian(value)
        }
    }

    /// The constant `Zero` (`ZeroOp`, 0x00).
    public static let zero = Integer(0)
    /// The constant `One` (`OneOp`, 0x01).
    public static let one = Integer(1)
    /// The constant `Ones`: all bits set (`OnesOp`, 0xFF).
    public static let ones = Integer(.max)

    /// An integer constant, encoded in the fewest bytes (see ``AML/appendInteger(_:to:)``).
    public struct Integer: AMLConvertible, Hashable, ExpressibleByIntegerLiteral {
        /// The value.
        public let value: UInt64

        /// Wraps `value`.
        public init(_ value: UInt64) { self.value = value }

        /// Wraps a literal.
        public init(integerLiteral value: UInt64) { self.value = value }

        /// Appends the shortest encoding.
        public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(value, to: &bytes) }
    }

    /// An integer constant that always uses the 4-byte `DWordPrefix` encoding, whatever its
    /// value (the form the ASL compiler gives `EisaId()`).
    public struct DWordConstant: AMLConvertible, Hashable {
        /// The value.
        public let value: UInt32

        /// Wraps `value`.
        public init(_ value: UInt32) { self.value = value }

        /// Appends `0x0C` and the four bytes.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.dwordPrefix)
            bytes.appendLittleEndian(value)
        }
    }

    /// A compressed EISA ID (ASL `EisaId("PNP0501")`): three uppercase letters packed in
    /// 5 bits each and four hexadecimal digits, stored as a big-endian 32-bit value and
    /// encoded as a DWord constant. `"PNP0501"` encodes as `0C 41 D0 05 01`.
    public struct EISAID: AMLConvertible, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        /// The ID as text, for example `"PNP0A06"`.
        public let text: String
        /// The 32-bit integer value the guest sees.
        public let value: UInt32

        /// Validates and compresses `text`.
        ///
        /// - Throws: ``ACPIError/invalidEISAID(_:)`` unless it is 3 uppercase letters and
        ///   4 hexadecimal digits.
        public init(_ text: String) throws(ACPIError) {
            let bytes = Array(text.utf8)
            guard bytes.count == 7, bytes[0..<3].allSatisfy({ (0x41...0x5a).contains($0) }) else {
                throw .invalidEISAID(text)
            }
            var digits: [UInt32] = []
            for byte in bytes[3...] {
                guard let digit = Self.hexDigit(byte) else { throw .invalidEISAID(text) }
                digits.append(digit)
            }
            let letters = bytes[0..<3].map { UInt32($0 - 0x40) }
            let bigEndian = letters[0] << 26 | letters[1] << 21 | letters[2] << 16
                | digits[0] << 12 | digits[1] << 8 | digits[2] << 4 | digits[3]
            self.text = text
            value = bigEndian.byteSwapped
        }

        /// An ID written as a literal; an invalid one traps with the reason.
        public init(stringLiteral value: String) {
            do {
                self = try EISAID(value)
            } catch {
                preconditionFailure(error.description)
            }
        }

        /// The value of an ASCII hexadecimal digit (either case).
        private static func hexDigit(_ byte: UInt8) -> UInt32? {
            switch byte {
            case 0x30...0x39: UInt32(byte - 0x30)
            case 0x41...0x46: UInt32(byte - 0x41 + 10)
            case 0x61...0x66: UInt32(byte - 0x61 + 10)
            default: nil
            }
        }

        /// The ID as text.
        public var description: String { text }

        /// Appends the DWord constant.
        public func appendAML(to bytes: inout [UInt8]) { DWordConstant(value).appendAML(to: &bytes) }
    }

    /// A string constant (`StringPrefix` 0x0D, the ASCII bytes, a NUL).
    public struct StringConstant: AMLConvertible, Hashable, ExpressibleByStringLiteral {
        /// The text.
        public let text: String

        /// Validates `text`: ASCII 0x01-0x7F only.
        ///
        /// - Throws: ``ACPIError/invalidAMLString(_:)``.
        public init(_ text: String) throws(ACPIError) {
            guard text.utf8.allSatisfy({ (0x01...0x7f).contains($0) }) else { throw .invalidAMLString(text) }
            self.text = text
        }

        /// A literal string; a NUL or non-ASCII character traps with the reason.
        public init(stringLiteral value: String) {
            do {
                self = try StringConstant(value)
            } catch {
                preconditionFailure(error.description)
            }
        }

        /// Appends `0x0D`, the bytes and the terminating NUL.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.stringPrefix)
            bytes += Array(text.utf8)
            bytes.append(0)
        }
    }

    /// A buffer of bytes (`BufferOp` 0x11, PkgLength, the size as an integer, the bytes).
    public struct Buffer: AMLConvertible, Hashable {
        /// The contents.
        public let bytes: [UInt8]

        /// A buffer holding `bytes`.
        public init(_ bytes: [UInt8]) { self.bytes = bytes }

        /// Appends the buffer.
        public func appendAML(to bytes: inout [UInt8]) {
            var content: [UInt8] = []
            AML.appendInteger(UInt64(self.bytes.count), to: &content)
            content += self.bytes
            AML.appendPackage([AMLOpcode.buffer], content, to: &bytes)
        }
    }

    /// A package of elements (`PackageOp` 0x12 with a count byte for up to 255 elements,
    /// `VarPackageOp` 0x13 with an integer count beyond).
    public struct Package: AMLConvertible {
        /// The elements: data objects or name strings.
        public let elements: [any AMLConvertible]

        /// A package of `elements`.
        public init(_ elements: [any AMLConvertible]) { self.elements = elements }

        /// Appends the package.
        public func appendAML(to bytes: inout [UInt8]) {
            var content: [UInt8] = []
            if elements.count <= 255 {
                content.append(UInt8(elements.count))
                content += AML.encode(elements)
                AML.appendPackage([AMLOpcode.package], content, to: &bytes)
            } else {
                AML.appendInteger(UInt64(elements.count), to: &content)
                content += AML.encode(elements)
                AML.appendPackage([AMLOpcode.variablePackage], content, to: &bytes)
            }
        }
    }

    /// A named object (ASL `Name(_HID, "ACPI0007")`): `NameOp` 0x08, the name, the value.
    public struct Name: AMLConvertible {
        /// The name.
        public let name: NameString
        /// The value: a data object (integer, string, buffer, package, EISA ID, resource template).
        public let value: any AMLConvertible

        /// Names `value`.
        public init(_ name: NameString, _ value: any AMLConvertible) {
            self.name = name
            self.value = value
        }

        /// Appends the named object.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.name)
            name.appendAML(to: &bytes)
            value.appendAML(to: &bytes)
        }
    }
}

/// Unsigned integers encode as AML integer constants (shortest form).
extension UInt8: AMLConvertible {
    /// Appends the shortest integer encoding.
    public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(UInt64(self), to: &bytes) }
}

/// Unsigned integers encode as AML integer constants (shortest form).
extension UInt16: AMLConvertible {
    /// Appends the shortest integer encoding.
    public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(UInt64(self), to: &bytes) }
}

/// Unsigned integers encode as AML integer constants (shortest form).
extension UInt32: AMLConvertible {
    /// Appends the shortest integer encoding.
    public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(UInt64(self), to: &bytes) }
}

/// Unsigned integers encode as AML integer constants (shortest form).
extension UInt64: AMLConvertible {
    /// Appends the shortest integer encoding.
    public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(self, to: &bytes) }
}

/// `Int` literals encode as AML integer constants; a negative value is encoded as its
/// 64-bit two's complement (so `-1` is `Ones`).
extension Int: AMLConvertible {
    /// Appends the shortest integer encoding of the 64-bit pattern.
    public func appendAML(to bytes: inout [UInt8]) { AML.appendInteger(UInt64(bitPattern: Int64(self)), to: &bytes) }
}

/// Swift strings encode as AML string constants. Only ASCII 0x01-0x7F is allowed; other
/// characters are a programming error and trap (use ``AML/StringConstant/init(_:)`` to
/// validate text that comes from elsewhere).
extension String: AMLConvertible {
    /// Appends `0x0D`, the bytes and a NUL.
    public func appendAML(to bytes: inout [UInt8]) {
        AML.StringConstant(stringLiteral: self).appendAML(to: &bytes)
    }
}
