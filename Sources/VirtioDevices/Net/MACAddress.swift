/// A 48-bit Ethernet MAC address, written `12:34:56:78:9a:bc` (as Cloud Hypervisor's
/// `--net mac=` and `host_mac=` take it).
public struct MACAddress: Hashable, Sendable, LosslessStringConvertible {
    /// The six bytes, in transmission order.
    public let bytes: [UInt8]

    /// The address made of `bytes`, or `nil` unless there are exactly six.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 6 else { return nil }
        self.bytes = Array(bytes)
    }

    /// Parses six two-digit hexadecimal bytes separated by colons (`12:34:56:78:9a:bc`);
    /// `nil` for anything else.
    public init?(_ description: String) {
        let parts = description.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    /// The colon-separated lowercase form, `12:34:56:78:9a:bc`.
    public var description: String {
        bytes.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined(separator: ":")
    }

    /// Whether this is a group (multicast or broadcast) address: the low bit of the first
    /// byte. A network card's own address never is.
    public var isMulticast: Bool { bytes[0] & 0x01 != 0 }
    /// Whether the address is locally administered (the second bit of the first byte),
    /// as addresses a VMM makes up are.
    public var isLocallyAdministered: Bool { bytes[0] & 0x02 != 0 }

    /// A random unicast, locally administered address (what Cloud Hypervisor gives a
    /// guest that names none) drawn from `generator`.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> MACAddress {
        var bytes = (0..<6).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        bytes[0] = (bytes[0] & ~0x01) | 0x02
        // Six bytes always make an address.
        return MACAddress(bytes: bytes)!
    }

    /// A random unicast, locally administered address from the system's generator.
    public static func random() -> MACAddress {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }
}
