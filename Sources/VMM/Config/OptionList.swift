/// Cloud Hypervisor's option value syntax: `key=value,key=value`, where a value may be
/// quoted (`"a,b"`) or bracketed (`[1,2]`) to contain commas.
public struct OptionList: Sendable {
    /// The option name, for errors (`"--cpus"`).
    public let option: String
    private var values: [String: String]
    private var order: [String]

    /// Parses `text` for `option`, accepting only `knownKeys`. A bare word with no `=` is
    /// taken as the value of `bareKey` (for example `--serial tty`), if given.
    public init(_ text: String, option: String, knownKeys: [String], bareKey: String? = nil) throws(ConfigError) {
        self.option = option
        values = [:]
        order = []
        for item in try Self.split(text, option: option) where !item.isEmpty {
            let key: String
            let value: String
            if let equals = item.firstIndex(of: "=") {
                key = String(item[..<equals])
                value = Self.unquote(String(item[item.index(after: equals)...]))
            } else if let bareKey {
                key = bareKey
                value = item
            } else {
                throw ConfigError(option: option, "'\(item)' is not key=value; accepted keys: \(knownKeys.joined(separator: ", "))")
            }
            guard knownKeys.contains(key) else {
                throw ConfigError(option: option, "unknown key '\(key)'; accepted keys: \(knownKeys.joined(separator: ", "))")
            }
            // As Cloud Hypervisor's option parser: `key=` means "not given", and a key given
            // twice takes its last value.
            if value.isEmpty, item.contains("=") {
                values[key] = nil
                order.removeAll { $0 == key }
                continue
            }
            if values[key] == nil { order.append(key) }
            values[key] = value
        }
    }

    private static func split(_ text: String, option: String) throws(ConfigError) -> [String] {
        var items: [String] = []
        var current = ""
        var quoted = false
        var depth = 0
        for ch in text {
            switch ch {
            case "\"": quoted.toggle(); current.append(ch)
            case "[" where !quoted: depth += 1; current.append(ch)
            case "]" where !quoted:
                depth -= 1
                if depth < 0 { throw ConfigError(option: option, "unbalanced ']' in '\(text)'") }
                current.append(ch)
            case "," where !quoted && depth == 0: items.append(current); current = ""
            default: current.append(ch)
            }
        }
        if quoted { throw ConfigError(option: option, "unterminated quote in '\(text)'") }
        if depth != 0 { throw ConfigError(option: option, "unbalanced '[' in '\(text)'") }
        items.append(current)
        return items
    }

    private static func unquote(_ value: String) -> String {
        if value.count >= 2, value.first == "\"", value.last == "\"" { return String(value.dropFirst().dropLast()) }
        return value
    }

    /// The raw value of `key`, if given.
    public subscript(key: String) -> String? { values[key] }

    /// The keys given, in order.
    public var keys: [String] { order }

    /// `key` as `on|off` (also `true|false`, in any case).
    public func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = values[key] else { return nil }
        switch value.lowercased() {
        case "on", "true": return true
        case "off", "false": return false
        default: throw ConfigError(option: option, "\(key)=\(value) is not on or off")
        }
    }

    /// `key` as an unsigned integer in `range` (decimal, or hexadecimal with `0x`).
    public func integer<T: FixedWidthInteger & UnsignedInteger>(_ key: String, as type: T.Type, in range: ClosedRange<T>? = nil) throws(ConfigError) -> T? {
        guard let value = values[key] else { return nil }
        let parsed: T? = value.hasPrefix("0x") ? T(value.dropFirst(2), radix: 16) : T(value)
        guard let number = parsed else {
            throw ConfigError(option: option, "\(key)=\(value) is not a whole number from \(range?.lowerBound ?? T.min) to \(range?.upperBound ?? T.max)")
        }
        if let range, !range.contains(number) {
            throw ConfigError(option: option, "\(key)=\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    /// `key` as a size: bytes, or with a `K`, `M` or `G` suffix (powers of 1024), as Cloud Hypervisor.
    public func size(_ key: String) throws(ConfigError) -> UInt64? {
        guard let value = values[key] else { return nil }
        guard let bytes = Self.parseSize(value) else {
            throw ConfigError(option: option, "\(key)=\(value) is not a size (bytes, or a number followed by K, M or G)")
        }
        return bytes
    }

    /// Parses `512M`, `1G`, `4096`, `64K`; nil if malformed or overflowing.
    public static func parseSize(_ text: String) -> UInt64? {
        guard let last = text.last else { return nil }
        let shift: UInt64
        var digits = Substring(text)
        switch last {
        case "K", "k": shift = 10; digits = digits.dropLast()
        case "M", "m": shift = 20; digits = digits.dropLast()
        case "G", "g": shift = 30; digits = digits.dropLast()
        default: shift = 0
        }
        guard let number = UInt64(digits) else { return nil }
        let (result, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : result
    }
}
