extension AML {
    /// An AML NameString (ACPI 6.x section 20.2.2): an optional root (`\`) or parent
    /// (`^`) prefix followed by zero or more 4-character name segments.
    ///
    /// Written the ASL way, with segments separated by dots: `"\_SB_.PCI0"`, `"^CSCN"`,
    /// `"_HID"`. Segments shorter than four characters are padded with `_` as the ASL
    /// compiler does (`"_S5"` is `_S5_`), and lowercase letters are uppercased.
    ///
    /// Encoding: the prefix characters, then nothing (NullName, `0x00`) for no segment,
    /// the segment itself for one, `0x2E` plus two segments for two (DualNamePrefix), and
    /// `0x2F`, a count byte and the segments for three or more (MultiNamePrefix).
    public struct NameString: AMLConvertible, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
        /// Whether the path starts at the namespace root (`\`).
        public let isRooted: Bool
        /// How many `^` (parent scope) prefixes the path starts with.
        public let parentPrefixCount: Int
        /// The 4-byte name segments, outermost first.
        public let segments: [[UInt8]]

        /// Parses an ASL-style path.
        ///
        /// - Throws: ``ACPIError/invalidNamePath(path:reason:)`` for an empty path, a path
        ///   with both `\` and `^`, or more than 255 segments;
        ///   ``ACPIError/invalidNameSegment(segment:path:)`` for a bad segment.
        public init(_ path: String) throws(ACPIError) {
            var rest = Substring(path)
            var rooted = false
            var parents = 0
            if rest.first == "\\" {
                rooted = true
                rest = rest.dropFirst()
            }
            while rest.first == "^" {
                parents += 1
                rest = rest.dropFirst()
            }
            if rooted && parents > 0 { throw .invalidNamePath(path: path, reason: "it cannot start with both \\ and ^") }
            if !rooted && parents == 0 && rest.isEmpty { throw .invalidNamePath(path: path, reason: "it is empty") }
            var parsed: [[UInt8]] = []
            if !rest.isEmpty {
                for segment in rest.split(separator: ".", omittingEmptySubsequences: false) {
                    parsed.append(try Self.segment(String(segment), path: path))
                }
            }
            if parsed.count > 255 { throw .invalidNamePath(path: path, reason: "it has more than 255 segments") }
            isRooted = rooted
            parentPrefixCount = parents
            segments = parsed
        }

        /// Parses a path written as a literal; an invalid literal is a programming error
        /// and traps with the reason.
        public init(stringLiteral value: String) {
            do {
                self = try NameString(value)
            } catch {
                preconditionFailure(error.description)
            }
        }

        /// One name segment, validated and padded to four bytes with `_`.
        static func segment(_ text: String, path: String) throws(ACPIError) -> [UInt8] {
            let bytes = Array(text.uppercased().utf8)
            guard (1...4).contains(bytes.count), let first = bytes.first, !(0x30...0x39).contains(first),
                  bytes.allSatisfy({ (0x41...0x5a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f })
            else { throw .invalidNameSegment(segment: text, path: path) }
            return bytes + Array(repeating: 0x5f, count: 4 - bytes.count)
        }

        /// The path in ASL notation with full 4-character segments, for example `\_SB_.COM1`.
        public var description: String {
            let prefix = isRooted ? "\\" : String(repeating: "^", count: parentPrefixCount)
            return prefix + segments.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ".")
        }

        /// Appends the prefix, the segment-count prefix and the segments.
        public func appendAML(to bytes: inout [UInt8]) {
            if isRooted { bytes.append(AMLOpcode.rootChar) }
            bytes += Array(repeating: AMLOpcode.parentPrefix, count: parentPrefixCount)
            switch segments.count {
            case 0: bytes.append(0x00)  // NullName
            case 1: break
            case 2: bytes.append(AMLOpcode.dualNamePrefix)
            default: bytes += [AMLOpcode.multiNamePrefix, UInt8(segments.count)]
            }
            for segment in segments { bytes += segment }
        }
    }

    /// A single 4-character name segment (NameSeg), as used by field elements.
    public struct NameSegment: Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
        /// The four bytes.
        public let bytes: [UInt8]

        /// Validates and pads `name` (1 to 4 characters of `A-Z`, `0-9`, `_`).
        ///
        /// - Throws: ``ACPIError/invalidNameSegment(segment:path:)``.
        public init(_ name: String) throws(ACPIError) { bytes = try NameString.segment(name, path: name) }

        /// A segment written as a literal; an invalid one traps with the reason.
        public init(stringLiteral value: String) {
            do {
                self = try NameSegment(value)
            } catch {
                preconditionFailure(error.description)
            }
        }

        /// The segment as text.
        public var description: String { String(decoding: bytes, as: UTF8.self) }
    }
}
