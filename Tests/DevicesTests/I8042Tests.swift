import DeviceModel
import Devices
import Testing

@Suite("i8042")
struct I8042Tests {
    @Test func resetCommandCallsTheHandlerExactlyOnce() {
        let resets = ResetCounter()
        let i8042 = I8042(onReset: resets.handler)
        i8042.writeByte(3, 0xfe)
        #expect(resets.count == 1)
        #expect(i8042.resetRequests == 1)
    }

    @Test(arguments: [UInt8(0x20), 0x60, 0xaa, 0xad, 0xd1, 0xf0, 0xff, 0x00])
    func otherCommandsAreIgnored(command: UInt8) {
        let resets = ResetCounter()
        let i8042 = I8042(onReset: resets.handler)
        i8042.writeByte(3, command)
        #expect(resets.count == 0)
        #expect(i8042.readByte(3) == 0)
    }

    @Test func resetByteElsewhereOrWiderIsIgnored() {
        let resets = ResetCounter()
        let i8042 = I8042(onReset: resets.handler)
        for offset: UInt64 in [0, 1, 2, 4, 0x100] { i8042.writeByte(offset, 0xfe) }
        i8042.write(offset: 3, size: 2, value: 0xfe)
        i8042.write(offset: 3, size: 1, value: 0x1fe)  // only the low byte counts: this is 0xFE
        #expect(resets.count == 1)
    }

    @Test func readsMatchCloudHypervisor() {
        let i8042 = I8042(onReset: {})
        #expect(i8042.readByte(0) == 0x20)  // port 0x61: PIT channel 2 output high
        #expect(i8042.readByte(1) == 0)
        #expect(i8042.readByte(2) == 0)
        #expect(i8042.readByte(3) == 0)     // port 0x64: no data, idle
        #expect(i8042.read(offset: 0, size: 2) == 0)
        #expect(i8042.name == "i8042")
    }

    @Test func decodesPorts0x61To0x64OnTheBus() throws {
        let resets = ResetCounter()
        let pio = Bus(name: "I/O port bus")
        try pio.insert(I8042(onReset: resets.handler), base: I8042.portBase, length: I8042.portLength)
        #expect(pio.read(address: 0x61, size: 1) == 0x20)
        #expect(pio.read(address: 0x64, size: 1) == 0)
        #expect(pio.read(address: 0x60, size: 1) == nil)  // the data port is not decoded
        #expect(pio.readOrAllOnes(address: 0x60, size: 1) == 0xff)
        pio.write(address: 0x64, size: 1, value: UInt64(I8042.resetCommand))
        pio.write(address: 0x64, size: 1, value: UInt64(I8042.resetCommand))
        #expect(resets.count == 2)
    }
}
