import ACPITables
import Foundation
import Testing

@Suite("PCI host bridge _OSC")
struct OSCTests {
    @Test("ToUUID byte order: the first three fields little-endian")
    func uuidBytes() {
        #expect(AML.uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766").bytes
                == [0x5B, 0x4D, 0xDB, 0x33, 0xF7, 0x1F, 0x1C, 0x40, 0x96, 0x57, 0x74, 0x41, 0xC0, 0x3D, 0xD7, 0x66])
    }

    @Test("_OSC encodes CreateDWordField, If/Else over the UUID and Return (Arg3)")
    func oscBytes() {
        let bytes = PlatformAML.pciHostBridgeOSC.amlBytes
        // MethodOp, then the name and 4 arguments, not serialized.
        #expect(bytes.first == 0x14)
        #expect(bytes.count > 60)
        let text = bytes.map { String(format: "%02x", $0) }.joined()
        #expect(text.contains("8a6b00" + "43445731"))          // CreateDWordField (Arg3, Zero, CDW1)
        #expect(text.contains("8a6b0a08" + "43445733"))        // CreateDWordField (Arg3, 0x08, CDW3)
        #expect(text.contains("5b4ddb33f71f1c4096577441c03dd766"))
        #expect(text.hasSuffix("a46b"))                        // Return (Arg3)
    }
}
