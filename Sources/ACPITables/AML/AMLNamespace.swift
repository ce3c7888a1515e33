extension AML {
    /// A scope (ASL `Scope(\_SB_) { ... }`): `ScopeOp` 0x10, PkgLength, the name, the
    /// objects defined in it.
    public struct Scope: AMLConvertible {
        /// The scope's path.
        public let name: NameString
        /// The objects opened in the scope.
        public let contents: [any AMLConvertible]

        /// A scope holding `contents`.
        public init(_ name: NameString, _ contents: [any AMLConvertible]) {
            self.name = name
            self.contents = contents
        }

        /// A scope whose contents are written one per line.
        public init(_ name: NameString, @AMLBuilder contents: () -> [any AMLConvertible]) {
            self.init(name, contents())
        }

        /// Appends the scope.
        public func appendAML(to bytes: inout [UInt8]) {
            AML.appendPackage([AMLOpcode.scope], name.amlBytes + AML.encode(contents), to: &bytes)
        }
    }

    /// A device (ASL `Device(COM1) { ... }`): `DeviceOp` 0x5B 0x82, PkgLength, the name,
    /// the objects describing it.
    public struct Device: AMLConvertible {
        /// The device's path (relative to the enclosing scope, or absolute).
        public let name: NameString
        /// The device's objects (`_HID`, `_UID`, `_CRS`, methods...).
        public let contents: [any AMLConvertible]

        /// A device holding `contents`.
        public init(_ name: NameString, _ contents: [any AMLConvertible]) {
            self.name = name
            self.contents = contents
        }

        /// A device whose contents are written one per line.
        public init(_ name: NameString, @AMLBuilder contents: () -> [any AMLConvertible]) {
            self.init(name, contents())
        }

        /// Appends the device.
        public func appendAML(to bytes: inout [UInt8]) {
            AML.appendPackage([AMLOpcode.extendedPrefix, AMLOpcode.device], name.amlBytes + AML.encode(contents), to: &bytes)
        }
    }

    /// A control method (ASL `Method(_STA, 0, NotSerialized) { ... }`): `MethodOp` 0x14,
    /// PkgLength, the name, the flags byte (argument count in bits 0-2, serialized in bit
    /// 3, sync level in bits 4-7), the body.
    public struct Method: AMLConvertible {
        /// The method's name.
        public let name: NameString
        /// How many arguments it takes (0...7).
        public let argumentCount: UInt8
        /// Whether the interpreter runs one invocation at a time.
        public let isSerialized: Bool
        /// The sync level (0...15) for serialized methods.
        public let syncLevel: UInt8
        /// The statements.
        public let body: [any AMLConvertible]

        /// A method running `body`. `argumentCount` above 7 or `syncLevel` above 15 are
        /// programming errors and trap.
        public init(_ name: NameString, arguments argumentCount: UInt8 = 0, serialized: Bool = false,
                    syncLevel: UInt8 = 0, _ body: [any AMLConvertible]) {
            precondition(argumentCount <= 7, "an AML method takes at most 7 arguments, not \(argumentCount)")
            precondition(syncLevel <= 15, "an AML sync level is 0...15, not \(syncLevel)")
            self.name = name
            self.argumentCount = argumentCount
            isSerialized = serialized
            self.syncLevel = syncLevel
            self.body = body
        }

        /// A method whose statements are written one per line.
        public init(_ name: NameString, arguments argumentCount: UInt8 = 0, serialized: Bool = false,
                    syncLevel: UInt8 = 0, @AMLBuilder body: () -> [any AMLConvertible]) {
            self.init(name, arguments: argumentCount, serialized: serialized, syncLevel: syncLevel, body())
        }

        /// The MethodFlags byte.
        public var flags: UInt8 { argumentCount | (isSerialized ? 0x08 : 0) | syncLevel << 4 }

        /// Appends the method.
        public func appendAML(to bytes: inout [UInt8]) {
            AML.appendPackage([AMLOpcode.method], name.amlBytes + [flags] + AML.encode(body), to: &bytes)
        }
    }

    /// A mutex (ASL `Mutex(CPLK, 0)`): `MutexOp` 0x5B 0x01, the name, the sync flags.
    public struct Mutex: AMLConvertible, Hashable {
        /// The mutex's name.
        public let name: NameString
        /// The sync level (0...15).
        public let syncLevel: UInt8

        /// A mutex at `syncLevel` (above 15 traps).
        public init(_ name: NameString, syncLevel: UInt8 = 0) {
            precondition(syncLevel <= 15, "an AML sync level is 0...15, not \(syncLevel)")
            self.name = name
            self.syncLevel = syncLevel
        }

        /// Appends the mutex.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes += [AMLOpcode.extendedPrefix, AMLOpcode.mutex]
            name.appendAML(to: &bytes)
            bytes.append(syncLevel)
        }
    }

    /// The address space of an operation region (RegionSpace byte).
    public enum RegionSpace: UInt8, Hashable, Sendable {
        /// Memory (MMIO).
        case systemMemory = 0x00
        /// Port I/O.
        case systemIO = 0x01
        /// PCI configuration space.
        case pciConfig = 0x02
        /// The embedded controller.
        case embeddedControl = 0x03
        /// SMBus.
        case smBus = 0x04
        /// CMOS.
        case systemCMOS = 0x05
        /// A PCI BAR.
        case pciBarTarget = 0x06
        /// IPMI.
        case ipmi = 0x07
        /// GPIO.
        case generalPurposeIO = 0x08
        /// Generic serial bus.
        case genericSerialBus = 0x09
        /// Platform communications channel.
        case platformCommunicationChannel = 0x0a
    }

    /// An operation region (ASL `OperationRegion(GDST, SystemMemory, 0xFED0_0000, 1)`):
    /// `OpRegionOp` 0x5B 0x80, the name, the space byte, the offset and length terms.
    public struct OperationRegion: AMLConvertible {
        /// The region's name.
        public let name: NameString
        /// The address space.
        public let space: RegionSpace
        /// The start address (usually an integer).
        public let offset: any AMLConvertible
        /// The length in bytes (usually an integer).
        public let length: any AMLConvertible

        /// A region of `length` bytes at `offset` in `space`.
        public init(_ name: NameString, space: RegionSpace, offset: any AMLConvertible, length: any AMLConvertible) {
            self.name = name
            self.space = space
            self.offset = offset
            self.length = length
        }

        /// Appends the region.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes += [AMLOpcode.extendedPrefix, AMLOpcode.operationRegion]
            name.appendAML(to: &bytes)
            bytes.append(space.rawValue)
            offset.appendAML(to: &bytes)
            length.appendAML(to: &bytes)
        }
    }

    /// A field list over an operation region (ASL `Field(GDST, ByteAcc, NoLock,
    /// WriteAsZeros) { GDAT, 8 }`): `FieldOp` 0x5B 0x81, PkgLength, the region name, the
    /// flags byte (access type bits 0-3, lock rule bit 4, update rule bits 5-6), the
    /// elements.
    public struct Field: AMLConvertible, Hashable {
        /// How the interpreter accesses the region.
        public enum AccessType: UInt8, Hashable, Sendable {
            /// AnyAcc.
            case any = 0
            /// ByteAcc.
            case byte = 1
            /// WordAcc.
            case word = 2
            /// DWordAcc.
            case dword = 3
            /// QWordAcc.
            case qword = 4
            /// BufferAcc.
            case buffer = 5
        }

        /// Whether accesses take the global lock.
        public enum LockRule: UInt8, Hashable, Sendable {
            /// NoLock.
            case noLock = 0
            /// Lock.
            case lock = 1
        }

        /// What the bits of an access outside the field are written as.
        public enum UpdateRule: UInt8, Hashable, Sendable {
            /// Preserve.
            case preserve = 0
            /// WriteAsOnes.
            case writeAsOnes = 1
            /// WriteAsZeros.
            case writeAsZeros = 2
        }

        /// One element of the field list.
        public enum Element: Hashable, Sendable {
            /// A named field `bits` wide: the NameSeg, then the width as a raw PkgLength.
            case named(NameSegment, bits: Int)
            /// Unnamed padding `bits` wide: `0x00`, then the width as a raw PkgLength.
            case reserved(bits: Int)
        }

        /// The operation region the fields live in.
        public let region: NameString
        /// The access type.
        public let access: AccessType
        /// The lock rule.
        public let lock: LockRule
        /// The update rule.
        public let update: UpdateRule
        /// The elements, in bit order from the region's start.
        public let elements: [Element]

        /// A field list.
        public init(_ region: NameString, access: AccessType, lock: LockRule = .noLock, update: UpdateRule = .preserve,
                    _ elements: [Element]) {
            self.region = region
            self.access = access
            self.lock = lock
            self.update = update
            self.elements = elements
        }

        /// The FieldFlags byte.
        public var flags: UInt8 { access.rawValue | lock.rawValue << 4 | update.rawValue << 5 }

        /// Appends the field list.
        public func appendAML(to bytes: inout [UInt8]) {
            var content = region.amlBytes + [flags]
            for element in elements {
                switch element {
                case let .named(name, bits):
                    content += name.bytes + AML.rawPackageLength(bits)
                case let .reserved(bits):
                    content += [0x00] + AML.rawPackageLength(bits)
                }
            }
            AML.appendPackage([AMLOpcode.extendedPrefix, AMLOpcode.field], content, to: &bytes)
        }
    }
}
