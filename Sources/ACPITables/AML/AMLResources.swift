/// One resource descriptor of a resource template (ACPI 6.x section 6.4): a small or
/// large descriptor the OS decodes from a `_CRS` buffer.
public protocol AMLResourceDescriptor: Sendable {
    /// Appends the descriptor's bytes (tag and payload).
    func appendDescriptor(to bytes: inout [UInt8])
}

extension AML {
    /// A resource template (ASL `ResourceTemplate() { ... }`): a buffer holding the
    /// descriptors followed by an End Tag (`0x79` and a checksum byte).
    ///
    /// The checksum byte is 0 by default, as the ASL compiler and Cloud Hypervisor write
    /// it (the specification reads 0 as "checksum valid"); ``EndTagChecksum/computed``
    /// makes the descriptors and End Tag sum to 0 instead.
    public struct ResourceTemplate: AMLConvertible {
        /// What the End Tag's checksum byte holds.
        public enum EndTagChecksum: Hashable, Sendable {
            /// 0: treat the checksum as valid.
            case zero
            /// The byte that makes every byte of the template sum to 0.
            case computed
        }

        /// The descriptors, in order.
        public let descriptors: [any AMLResourceDescriptor]
        /// How the End Tag's checksum is filled in.
        public let checksum: EndTagChecksum

        /// A template of `descriptors`.
        public init(_ descriptors: [any AMLResourceDescriptor], checksum: EndTagChecksum = .zero) {
            self.descriptors = descriptors
            self.checksum = checksum
        }

        /// The descriptors and End Tag: the buffer's contents.
        public var descriptorBytes: [UInt8] {
            var bytes: [UInt8] = []
            for descriptor in descriptors { descriptor.appendDescriptor(to: &bytes) }
            bytes.append(0x79)
            bytes.append(checksum == .zero ? 0 : ACPIChecksum.complement(of: bytes))
            return bytes
        }

        /// Appends the template as an AML buffer.
        public func appendAML(to bytes: inout [UInt8]) { Buffer(descriptorBytes).appendAML(to: &bytes) }
    }

    /// An I/O port descriptor (ASL `IO(Decode16, min, max, alignment, length)`), small
    /// item 0x08 of 7 bytes: tag `0x47`, the decode flag, minimum and maximum base (16-bit
    /// each), alignment, length.
    public struct IO: AMLResourceDescriptor, Hashable {
        /// Whether the device decodes 16 address bits (`Decode16`) rather than 10.
        public let decodes16Bits: Bool
        /// The lowest base address.
        public let minimum: UInt16
        /// The highest base address.
        public let maximum: UInt16
        /// The base alignment.
        public let alignment: UInt8
        /// How many ports.
        public let length: UInt8

        /// A port range descriptor.
        public init(decodes16Bits: Bool = true, minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8) {
            self.decodes16Bits = decodes16Bits
            self.minimum = minimum
            self.maximum = maximum
            self.alignment = alignment
            self.length = length
        }

        /// Appends the 8 bytes.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            bytes += [0x47, decodes16Bits ? 1 : 0]
            bytes.appendLittleEndian(minimum)
            bytes.appendLittleEndian(maximum)
            bytes += [alignment, length]
        }
    }

    /// A fixed-location I/O port descriptor (ASL `FixedIO(base, length)`), small item 0x09
    /// of 3 bytes: tag `0x4B`, a 10-bit base, the length.
    public struct FixedIO: AMLResourceDescriptor, Hashable {
        /// The base port (10 bits decoded).
        public let base: UInt16
        /// How many ports.
        public let length: UInt8

        /// A fixed port range; a base above 0x3FF is a programming error and traps.
        public init(base: UInt16, length: UInt8) {
            precondition(base <= 0x3ff, "FixedIO decodes 10 address bits: base \(hex(base)) is above 0x3FF")
            self.base = base
            self.length = length
        }

        /// Appends the 4 bytes.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            bytes.append(0x4b)
            bytes.appendLittleEndian(base)
            bytes.append(length)
        }
    }

    /// An IRQ descriptor, small item 0x04: ASL `IRQNoFlags() {4}` is tag `0x22` and the
    /// 16-bit IRQ mask (high-true, edge-sensitive, exclusive); with flags it is tag `0x23`,
    /// the mask and a flags byte (bit 0 edge, bit 3 active low, bit 4 shared, bit 5 wake).
    public struct IRQ: AMLResourceDescriptor, Hashable {
        /// The ISA IRQs (0...15).
        public let irqs: [UInt8]
        /// The flags byte, or `nil` for the 2-byte `IRQNoFlags` form.
        public let flags: UInt8?

        /// `IRQNoFlags() { irqs }`; an IRQ above 15 is a programming error and traps.
        public init(noFlags irqs: [UInt8]) {
            precondition(irqs.allSatisfy { $0 <= 15 }, "an IRQ descriptor holds ISA IRQs 0...15, not \(irqs)")
            self.irqs = irqs
            flags = nil
        }

        /// `IRQ(Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) { irqs }`.
        public init(edgeTriggered: Bool, activeLow: Bool, shared: Bool, wakeCapable: Bool = false, _ irqs: [UInt8]) {
            precondition(irqs.allSatisfy { $0 <= 15 }, "an IRQ descriptor holds ISA IRQs 0...15, not \(irqs)")
            self.irqs = irqs
            flags = (edgeTriggered ? 0x01 : 0) | (activeLow ? 0x08 : 0) | (shared ? 0x10 : 0) | (wakeCapable ? 0x20 : 0)
        }

        /// Appends the 3 or 4 bytes.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            let mask = irqs.reduce(UInt16(0)) { $0 | 1 << UInt16($1) }
            bytes.append(flags == nil ? 0x22 : 0x23)
            bytes.appendLittleEndian(mask)
            if let flags { bytes.append(flags) }
        }
    }

    /// An extended interrupt descriptor (ASL `Interrupt(ResourceConsumer, Edge,
    /// ActiveHigh, Exclusive) { 4 }`), large item 0x09: tag `0x89`, a 16-bit length
    /// (2 + 4 per interrupt), flags (bit 0 consumer, bit 1 edge, bit 2 active low, bit 3
    /// shared, bit 4 wake), the interrupt count, the 32-bit GSIs.
    public struct Interrupt: AMLResourceDescriptor, Hashable {
        /// The flags byte.
        public let flags: UInt8
        /// The global system interrupts.
        public let interrupts: [UInt32]

        /// An interrupt descriptor; 0 or more than 255 interrupts trap.
        public init(consumer: Bool = true, edgeTriggered: Bool, activeLow: Bool, shared: Bool,
                    wakeCapable: Bool = false, _ interrupts: [UInt32]) {
            precondition((1...255).contains(interrupts.count), "an Interrupt descriptor lists 1 to 255 interrupts")
            flags = (consumer ? 0x01 : 0) | (edgeTriggered ? 0x02 : 0) | (activeLow ? 0x04 : 0)
                | (shared ? 0x08 : 0) | (wakeCapable ? 0x10 : 0)
            self.interrupts = interrupts
        }

        /// Appends the descriptor.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            bytes.append(0x89)
            bytes.appendLittleEndian(UInt16(2 + 4 * interrupts.count))
            bytes += [flags, UInt8(interrupts.count)]
            for interrupt in interrupts { bytes.appendLittleEndian(interrupt) }
        }
    }

    /// A 32-bit fixed memory range (ASL `Memory32Fixed(ReadWrite, base, length)`), large
    /// item 0x06: tag `0x86`, length 9, the read-write flag, base and length (32-bit each).
    public struct Memory32Fixed: AMLResourceDescriptor, Hashable {
        /// Whether the range is writable.
        public let readWrite: Bool
        /// The base address.
        public let base: UInt32
        /// The length in bytes.
        public let length: UInt32

        /// A fixed memory range.
        public init(readWrite: Bool = true, base: UInt32, length: UInt32) {
            self.readWrite = readWrite
            self.base = base
            self.length = length
        }

        /// Appends the 12 bytes.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            bytes.append(0x86)
            bytes.appendLittleEndian(UInt16(9))
            bytes.append(readWrite ? 1 : 0)
            bytes.appendLittleEndian(base)
            bytes.appendLittleEndian(length)
        }
    }

    /// A Word, DWord or QWord address space descriptor (ASL `DWordMemory(...)`,
    /// `QWordIO(...)`, `WordBusNumber(...)`), large items 0x08 / 0x07 / 0x0A: the tag, a
    /// 16-bit length, the resource type, the general flags (bit 0 consumer, bit 1
    /// subtractive decode, bit 2 minimum fixed, bit 3 maximum fixed), the type-specific
    /// flags, then granularity, minimum, maximum, translation offset and length in the
    /// descriptor's width.
    public struct AddressSpace: AMLResourceDescriptor, Hashable {
        /// The width of the five address fields.
        public enum Width: Hashable, Sendable {
            /// 16-bit fields (tag 0x88, length 13).
            case word
            /// 32-bit fields (tag 0x87, length 23).
            case dword
            /// 64-bit fields (tag 0x8A, length 43).
            case qword

            /// The descriptor tag.
            var tag: UInt8 { switch self { case .word: 0x88; case .dword: 0x87; case .qword: 0x8a } }
            /// The bytes per address field.
            var fieldSize: Int { switch self { case .word: 2; case .dword: 4; case .qword: 8 } }
        }

        /// How a memory range may be cached (type-specific flags bits 1-2).
        public enum Cacheability: UInt8, Hashable, Sendable {
            /// NonCacheable.
            case notCacheable = 0
            /// Cacheable.
            case cacheable = 1
            /// WriteCombining.
            case writeCombining = 2
            /// Prefetchable.
            case prefetchable = 3
        }

        /// What kind of range, with its type-specific flags.
        public enum ResourceType: Hashable, Sendable {
            /// Memory (type 0); flags: read-write in bit 0, cacheability in bits 1-2.
            case memory(Cacheability, readWrite: Bool)
            /// I/O ports (type 1); flags: `EntireRange` (bits 0-1 = 3).
            case io
            /// PCI bus numbers (type 2); no flags.
            case busNumber

            /// The resource type byte.
            var code: UInt8 { switch self { case .memory: 0; case .io: 1; case .busNumber: 2 } }
            /// The type-specific flags byte.
            var flags: UInt8 {
                switch self {
                case let .memory(cacheability, readWrite): cacheability.rawValue << 1 | (readWrite ? 1 : 0)
                case .io: 0x03
                case .busNumber: 0
                }
            }
        }

        /// The field width.
        public let width: Width
        /// The resource type.
        public let type: ResourceType
        /// Whether the device consumes (rather than produces) the range.
        public let consumer: Bool
        /// The lowest address.
        public let minimum: UInt64
        /// The highest address.
        public let maximum: UInt64
        /// The translation offset.
        public let translation: UInt64
        /// The granularity (address decode mask).
        public let granularity: UInt64

        /// A range `[minimum, maximum]` with fixed minimum and maximum and a length of
        /// `maximum - minimum + 1`, as Cloud Hypervisor's `AddressSpace` builds them
        /// (producer by default). Values wider than `width`, or `maximum` below `minimum`,
        /// are programming errors and trap.
        public init(_ width: Width, _ type: ResourceType, consumer: Bool = false, minimum: UInt64, maximum: UInt64,
                    translation: UInt64 = 0, granularity: UInt64 = 0) {
            let limit: UInt64 = width == .qword ? .max : (1 << (8 * UInt64(width.fieldSize))) - 1
            precondition(minimum <= maximum, "address range \(hex(minimum))-\(hex(maximum)) is empty")
            precondition(maximum <= limit && translation <= limit && granularity <= limit,
                         "address range \(hex(minimum))-\(hex(maximum)) does not fit a \(width) descriptor")
            precondition(!(minimum == 0 && maximum == .max), "a range covering all 2^64 addresses has no encodable length")
            self.width = width
            self.type = type
            self.consumer = consumer
            self.minimum = minimum
            self.maximum = maximum
            self.translation = translation
            self.granularity = granularity
        }

        /// Appends the descriptor.
        public func appendDescriptor(to bytes: inout [UInt8]) {
            bytes.append(width.tag)
            bytes.appendLittleEndian(UInt16(3 + 5 * width.fieldSize))
            bytes += [type.code, (consumer ? 0x01 : 0) | 0x04 | 0x08, type.flags]
            for value in [granularity, minimum, maximum, translation, maximum - minimum + 1] {
                switch width {
                case .word: bytes.appendLittleEndian(UInt16(value))
                case .dword: bytes.appendLittleEndian(UInt32(value))
                case .qword: bytes.appendLittleEndian(value)
                }
            }
        }
    }
}
