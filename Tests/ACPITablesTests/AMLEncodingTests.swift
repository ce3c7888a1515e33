import ACPITables
import Testing

/// Each AML construct against bytes computed by hand from the ACPI 6.x grammar.
@Suite("AML encoding")
struct AMLEncodingTests {
    static let packageLengthCases: [(Int, [UInt8])] = [
        (0, [0x01]),
        (62, [0x3f]),                 // 62 + 1 = 63: the largest one-byte length
        (63, [0x41, 0x04]),           // 63 + 2 = 65 = 0x041
        (64, [0x42, 0x04]),           // 64 + 2 = 66 = 0x042
        (4093, [0x4f, 0xff]),         // 4093 + 2 = 4095: the largest two-byte length
        (4094, [0x81, 0x00, 0x01]),   // 4094 + 3 = 4097 = 0x1001
        (4096, [0x83, 0x00, 0x01]),   // 4096 + 3 = 4099 = 0x1003
        (1 << 20, [0xc4, 0x00, 0x00, 0x01]),  // 0x100000 + 4 = 0x100004
    ]

    @Test(arguments: packageLengthCases)
    func packageLength(content: Int, expected: [UInt8]) {
        #expect(AML.packageLength(contentLength: content) == expected)
    }

    @Test func rawPackageLengthDoesNotCountItself() {
        #expect(AML.rawPackageLength(8) == [0x08])
        #expect(AML.rawPackageLength(63) == [0x3f])
        #expect(AML.rawPackageLength(64) == [0x40, 0x04])
        #expect(AML.rawPackageLength(256) == [0x40, 0x10])
        #expect(AML.rawPackageLength(0x1_0000) == [0x80, 0x00, 0x10])
    }

    @Test func nameStrings() {
        #expect(AML.NameString("_SB_").amlBytes == hexBytes("5F 53 42 5F"))
        #expect(AML.NameString("\\_SB_").amlBytes == hexBytes("5C 5F 53 42 5F"))
        #expect(AML.NameString("_SB_.COM1").amlBytes == hexBytes("2E 5F 53 42 5F 43 4F 4D 31"))
        #expect(AML.NameString("_SB_.PCI0._HID").amlBytes
                == hexBytes("2F 03 5F 53 42 5F 50 43 49 30 5F 48 49 44"))
        #expect(AML.NameString("\\_SB_.CPUS.CSCN").amlBytes
                == hexBytes("5C 2F 03 5F 53 42 5F 43 50 55 53 43 53 43 4E"))
        #expect(AML.NameString("^^CSCN").amlBytes == hexBytes("5E 5E 43 53 43 4E"))
        #expect(AML.NameString("\\").amlBytes == [0x5c, 0x00])  // root and NullName
    }

    @Test func shortSegmentsArePaddedAndUppercased() throws {
        let path = "\\_sb.gec"
        let name = try AML.NameString(path)
        #expect(name.description == "\\_SB_.GEC_")
        #expect(name.amlBytes == hexBytes("5C 2E 5F 53 42 5F 47 45 43 5F"))
        #expect(AML.NameString("_S5").amlBytes == Array("_S5_".utf8))
    }

    @Test(arguments: ["", "1ABC", "ABCDE", "A-B", "_SB_..COM1", "\\^A", "_SB_.", "é"])
    func invalidNamesAreRejected(path: String) {
        #expect(throws: ACPIError.self) { try AML.NameString(path) }
    }

    @Test func invalidSegmentErrorNamesTheSegment() {
        let path = "_SB_.ABCDE"
        #expect(throws: ACPIError.invalidNameSegment(segment: "ABCDE", path: path)) { try AML.NameString(path) }
        let message = ACPIError.invalidNameSegment(segment: "ABCDE", path: "_SB_.ABCDE").description
        #expect(message.contains("\"ABCDE\"") && message.contains("1 to 4 characters"))
    }

    static let integerCases: [(UInt64, [UInt8])] = [
        (UInt64(0), [UInt8(0x00)]),
        (1, [0x01]),
        (2, [0x0a, 0x02]),
        (0x80, [0x0a, 0x80]),
        (0xff, [0x0a, 0xff]),
        (0x100, [0x0b, 0x00, 0x01]),
        (1024, [0x0b, 0x00, 0x04]),
        (0xffff, [0x0b, 0xff, 0xff]),
        (0x1_0000, [0x0c, 0x00, 0x00, 0x01, 0x00]),
        (16 << 20, [0x0c, 0x00, 0x00, 0x00, 0x01]),
        (0xffff_ffff, [0x0c, 0xff, 0xff, 0xff, 0xff]),
        (0x1_0000_0000, [0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]),
        (0xdeca_fbad_deca_fbad, [0x0e, 0xad, 0xfb, 0xca, 0xde, 0xad, 0xfb, 0xca, 0xde]),
        (.max, [0xff]),
    ]

    @Test(arguments: integerCases)
    func integersUseTheShortestEncoding(value: UInt64, expected: [UInt8]) {
        #expect(value.amlBytes == expected)
        #expect(AML.Integer(value).amlBytes == expected)
    }

    @Test func constantsAndSmallerIntegerTypes() {
        #expect(AML.zero.amlBytes == [0x00])
        #expect(AML.one.amlBytes == [0x01])
        #expect(AML.ones.amlBytes == [0xff])
        #expect(UInt8(5).amlBytes == [0x0a, 0x05])
        #expect(UInt16(0x3f8).amlBytes == [0x0b, 0xf8, 0x03])
        #expect(UInt32(0xfec0_0000).amlBytes == [0x0c, 0x00, 0x00, 0xc0, 0xfe])
        #expect(7.amlBytes == [0x0a, 0x07])
        #expect((-1).amlBytes == [0xff])
        #expect(AML.DWordConstant(1).amlBytes == [0x0c, 0x01, 0x00, 0x00, 0x00])
    }

    @Test func strings() throws {
        #expect("ACPI0007".amlBytes == hexBytes("0D 41 43 50 49 30 30 30 37 00"))
        #expect("".amlBytes == [0x0d, 0x00])
        let com1 = "COM1", withNUL = "a\u{0}b", accented = "café"
        #expect(try AML.StringConstant(com1).amlBytes == hexBytes("0D 43 4F 4D 31 00"))
        #expect(throws: ACPIError.invalidAMLString(withNUL)) { try AML.StringConstant(withNUL) }
        #expect(throws: ACPIError.self) { try AML.StringConstant(accented) }
    }

    @Test func eisaIDs() throws {
        #expect(AML.EISAID("PNP0501").amlBytes == hexBytes("0C 41 D0 05 01"))
        #expect(AML.EISAID("PNP0C0C").amlBytes == hexBytes("0C 41 D0 0C 0C"))
        #expect(AML.EISAID("PNP0A06").amlBytes == hexBytes("0C 41 D0 0A 06"))
        let lowercaseDigit = "PNP0c02"
        #expect(try AML.EISAID(lowercaseDigit).value == 0x020C_D041)
        for bad in ["PNP050", "pnp0501", "PNP05G1", "P1P0501", "PNP05011"] {
            #expect(throws: ACPIError.invalidEISAID(bad)) { try AML.EISAID(bad) }
        }
    }

    @Test func buffers() {
        #expect(AML.Buffer([1, 2, 3]).amlBytes == hexBytes("11 06 0A 03 01 02 03"))
        #expect(AML.Buffer([]).amlBytes == hexBytes("11 02 00"))
        let large = AML.Buffer(Array(repeating: 0xaa, count: 300)).amlBytes
        // 300 bytes + 3 size bytes (0B 2C 01) + 2 PkgLength bytes = 305 = 0x131.
        #expect(Array(large.prefix(6)) == hexBytes("11 41 13 0B 2C 01"))
        #expect(large.count == 306)
    }

    @Test func namedPackageS5() {
        // Name (_S5, Package (0x01) { 0x05 }), the ACPI spec's and Cloud Hypervisor's example.
        #expect(AML.Name("_S5_", AML.Package([UInt8(5)])).amlBytes == hexBytes("08 5F 53 35 5F 12 04 01 0A 05"))
        #expect(AML.Package([5, 0]).amlBytes == hexBytes("12 05 02 0A 05 00"))
        #expect(AML.Package([]).amlBytes == hexBytes("12 02 00"))
    }

    @Test func largePackagesUseVarPackage() {
        let bytes = AML.Package(Array(repeating: AML.zero, count: 256)).amlBytes
        // VarPackageOp, PkgLength (256 zeros + 3 count bytes + 2 = 261 = 0x105), count 0x100.
        #expect(Array(bytes.prefix(6)) == hexBytes("13 45 10 0B 00 01"))
        #expect(bytes.count == 262)
    }

    @Test func scopesAndDevices() {
        #expect(AML.Scope("\\_SB_", []).amlBytes == hexBytes("10 06 5C 5F 53 42 5F"))
        let device = AML.Device("COM1") { AML.Name("_UID", AML.zero) }
        #expect(device.amlBytes == hexBytes("5B 82 0B 43 4F 4D 31 08 5F 55 49 44 00"))
    }

    @Test func methods() {
        let sta = AML.Method("_STA") { AML.Return(UInt8(0x0f)) }
        #expect(sta.amlBytes == hexBytes("14 09 5F 53 54 41 00 A4 0A 0F"))
        #expect(AML.Method("CSCN", serialized: true, []).amlBytes == hexBytes("14 06 43 53 43 4E 08"))
        #expect(AML.Method("_EVT", arguments: 1, serialized: true, []).flags == 0x09)
        #expect(AML.Method("MTHD", arguments: 7, serialized: true, syncLevel: 15, []).flags == 0xff)
    }

    @Test func localsArgumentsAndStore() {
        #expect(AML.Local(0).amlBytes == [0x60])
        #expect(AML.Local(7).amlBytes == [0x67])
        #expect(AML.Arg(0).amlBytes == [0x68])
        #expect(AML.Arg(6).amlBytes == [0x6e])
        #expect(AML.Store(AML.NameString("GDAT"), into: AML.Local(0)).amlBytes == hexBytes("70 47 44 41 54 60"))
        #expect(AML.Store(AML.Arg(0), into: AML.Local(1)).amlBytes == hexBytes("70 68 61"))
        #expect(AML.Return(AML.Local(0)).amlBytes == hexBytes("A4 60"))
    }

    @Test func ifElseAndWhile() {
        let notify = AML.If(AML.equal(AML.Local(1), AML.one)) {
            AML.Notify("\\_SB_.PWRB", UInt8(0x80))
        }
        #expect(notify.amlBytes == hexBytes("A0 11 93 61 01 86 5C 2E 5F 53 42 5F 50 57 52 42 0A 80"))
        let branch = AML.If(AML.Arg(0), then: [AML.Return(AML.one)], else: [AML.Return(AML.zero)])
        #expect(branch.amlBytes == hexBytes("A0 04 68 A4 01 A1 03 A4 00"))
        let loop = AML.While(AML.less(AML.Local(0), UInt8(4))) {
            AML.increment(AML.Local(0))
            AML.Break()
        }
        #expect(loop.amlBytes == hexBytes("A2 08 95 60 0A 04 75 60 A5"))
    }

    @Test func arithmeticAndLogic() {
        #expect(AML.and(AML.Local(0), AML.one, into: AML.Local(1)).amlBytes == hexBytes("7B 60 01 61"))
        #expect(AML.add(AML.Local(0), AML.one).amlBytes == hexBytes("72 60 01 00"))
        #expect(AML.shiftLeft(AML.one, AML.Arg(0), into: AML.Local(2)).amlBytes == hexBytes("79 01 68 62"))
        #expect(AML.Arithmetic(.or, AML.Local(0), UInt8(8), into: AML.Local(0)).amlBytes == hexBytes("7D 60 0A 08 60"))
        #expect(AML.Comparison(.notEqual, AML.Arg(0), AML.zero).amlBytes == hexBytes("92 93 68 00"))
        #expect(AML.Comparison(.greaterOrEqual, AML.Arg(0), AML.one).amlBytes == hexBytes("92 95 68 01"))
        #expect(AML.Comparison(.lessOrEqual, AML.Arg(0), AML.one).amlBytes == hexBytes("92 94 68 01"))
        #expect(AML.Logical(requiresBoth: true, AML.Arg(0), AML.Arg(1)).amlBytes == hexBytes("90 68 69"))
        #expect(AML.Logical(requiresBoth: false, AML.Arg(0), AML.Arg(1)).amlBytes == hexBytes("91 68 69"))
        #expect(AML.LogicalNot(AML.Arg(0)).amlBytes == hexBytes("92 68"))
        #expect(AML.Step(increments: false, AML.Local(3)).amlBytes == hexBytes("76 63"))
    }

    @Test func methodCallsAndNotify() {
        #expect(AML.MethodCall("\\_SB_.CPUS.CSCN").amlBytes == hexBytes("5C 2F 03 5F 53 42 5F 43 50 55 53 43 53 43 4E"))
        #expect(AML.MethodCall("CTFY", [AML.Local(0), AML.one]).amlBytes == hexBytes("43 54 46 59 60 01"))
        #expect(AML.Notify("C000", AML.Arg(1)).amlBytes == hexBytes("86 43 30 30 30 69"))
    }

    @Test func mutexAcquireRelease() {
        #expect(AML.Mutex("CPLK").amlBytes == hexBytes("5B 01 43 50 4C 4B 00"))
        #expect(AML.Acquire("CPLK").amlBytes == hexBytes("5B 23 43 50 4C 4B FF FF"))
        #expect(AML.Acquire("CPLK", timeout: 0x0fff).amlBytes == hexBytes("5B 23 43 50 4C 4B FF 0F"))
        #expect(AML.Release("CPLK").amlBytes == hexBytes("5B 27 43 50 4C 4B"))
    }

    @Test func operationRegionAndField() {
        let region = AML.OperationRegion("GDST", space: .systemMemory, offset: UInt32(0xfed0_0000), length: 1)
        #expect(region.amlBytes == hexBytes("5B 80 47 44 53 54 00 0C 00 00 D0 FE 01"))
        let io = AML.OperationRegion("PRST", space: .systemIO, offset: UInt16(0xcd8), length: UInt8(0x0c))
        #expect(io.amlBytes == hexBytes("5B 80 50 52 53 54 01 0B D8 0C 0A 0C"))
        let field = AML.Field("GDST", access: .byte, update: .writeAsZeros, [.named("GDAT", bits: 8)])
        #expect(field.flags == 0x41)
        #expect(field.amlBytes == hexBytes("5B 81 0B 47 44 53 54 41 47 44 41 54 08"))
        let mixed = AML.Field("PRST", access: .dword, lock: .lock, update: .preserve,
                              [.named("CSEL", bits: 32), .reserved(bits: 32), .named("CDAT", bits: 32)])
        #expect(mixed.amlBytes == hexBytes("5B 81 12 50 52 53 54 13 43 53 45 4C 20 00 20 43 44 41 54 20"))
    }

    @Test func smallResourceDescriptors() {
        var bytes: [UInt8] = []
        AML.IO(minimum: 0x3f8, maximum: 0x3f8, alignment: 0, length: 8).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("47 01 F8 03 F8 03 00 08"))
        bytes = []
        AML.IRQ(noFlags: [4]).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("22 10 00"))
        bytes = []
        AML.IRQ(edgeTriggered: false, activeLow: true, shared: true, [5, 7]).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("23 A0 00 18"))
        bytes = []
        AML.FixedIO(base: 0x60, length: 1).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("4B 60 00 01"))
    }

    @Test func largeResourceDescriptors() {
        var bytes: [UInt8] = []
        AML.Interrupt(edgeTriggered: true, activeLow: false, shared: false, [4]).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("89 06 00 03 01 04 00 00 00"))
        bytes = []
        AML.Interrupt(consumer: false, edgeTriggered: false, activeLow: true, shared: true, wakeCapable: true, [5, 0x20])
            .appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("89 0A 00 1C 02 05 00 00 00 20 00 00 00"))
        bytes = []
        AML.Memory32Fixed(base: 0xe800_0000, length: 0x10_0000).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("86 09 00 01 00 00 00 E8 00 00 10 00"))
    }

    @Test func addressSpaceDescriptors() {
        var bytes: [UInt8] = []
        AML.AddressSpace(.dword, .memory(.notCacheable, readWrite: true), minimum: 0xc000_0000, maximum: 0xc000_0fff)
            .appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("87 17 00 00 0C 01 00000000 000000C0 FF0F00C0 00000000 00100000"))
        bytes = []
        AML.AddressSpace(.word, .busNumber, consumer: true, minimum: 0, maximum: 0xff).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("88 0D 00 02 0D 00 0000 0000 FF00 0000 0001"))
        bytes = []
        AML.AddressSpace(.qword, .io, minimum: 0x1000, maximum: 0xffff).appendDescriptor(to: &bytes)
        #expect(bytes == hexBytes("8A 2B 00 01 0C 03") + [UInt8](repeating: 0, count: 8)
                + hexBytes("0010000000000000 FFFF000000000000 0000000000000000 00F0000000000000"))
        bytes = []
        AML.AddressSpace(.qword, .memory(.prefetchable, readWrite: false), minimum: 0x1_0000_0000, maximum: 0x1_ffff_ffff)
            .appendDescriptor(to: &bytes)
        #expect(bytes[5] == 0x06)
        #expect(bytes.count == 46)
    }

    @Test func resourceTemplates() {
        #expect(AML.ResourceTemplate([AML.IRQ(noFlags: [4])]).amlBytes == hexBytes("11 08 0A 05 22 10 00 79 00"))
        let checked = AML.ResourceTemplate([AML.IRQ(noFlags: [4])], checksum: .computed)
        #expect(checked.descriptorBytes == hexBytes("22 10 00 79 55"))
        #expect(ACPIChecksum.sum(checked.descriptorBytes) == 0)
        #expect(AML.ResourceTemplate([]).amlBytes == hexBytes("11 05 0A 02 79 00"))
    }

    @Test func resultBuilderSupportsConditionsAndLoops() {
        let withSerial = true
        let device = AML.Device("TEST") {
            if withSerial { AML.Name("SER_", AML.one) } else { AML.Name("NSER", AML.one) }
            for index in 0..<2 { AML.Name(try! AML.NameString("N\(index)"), UInt8(index)) }
            [AML.Name("LAST", AML.zero)]
        }
        #expect(device.contents.count == 4)
        #expect(device.amlBytes == hexBytes("5B 82 1D 54 45 53 54 08 53 45 52 5F 01 08 4E 30 5F 5F 00 08 4E 31 5F 5F 01 08 4C 41 53 54 00"))
    }

    @Test func rawBytesPassThrough() {
        #expect(AML.Raw([0xa3]).amlBytes == [0xa3])
        let scope = AML.Scope("\\", [AML.Raw([0xa3])])
        #expect(scope.amlBytes == hexBytes("10 04 5C 00 A3"))
    }
}
