import DeviceModel
import Devices
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

extension CMOSRTC {
    /// Selects CMOS byte `index` and reads it.
    func value(at index: UInt8) -> UInt8 {
        writeByte(0, index)
        return readByte(1)
    }

    /// Selects CMOS byte `index` and writes `value` to it.
    func store(_ value: UInt8, at index: UInt8) {
        writeByte(0, index)
        writeByte(1, value)
    }
}

/// 2024-02-29 23:59:58 UTC, a Thursday, two seconds before a leap-day rollover.
let leapDayEvening: Int64 = 1_709_251_198

@Suite("CMOS RTC")
struct CMOSRTCTests {
    @Test func bcdTimeForAFixedInstant() {
        let rtc = CMOSRTC(memoryBelow4G: 1 << 30, memoryAbove4G: 0, clock: FixedWallClock(seconds: leapDayEvening))
        #expect(rtc.value(at: 0x00) == 0x58)  // seconds
        #expect(rtc.value(at: 0x02) == 0x59)  // minutes
        #expect(rtc.value(at: 0x04) == 0x23)  // hours, 24-hour
        #expect(rtc.value(at: 0x06) == 0x05)  // Thursday (Sunday = 1)
        #expect(rtc.value(at: 0x07) == 0x29)  // day
        #expect(rtc.value(at: 0x08) == 0x02)  // month
        #expect(rtc.value(at: 0x09) == 0x24)  // year
        #expect(rtc.value(at: 0x32) == 0x20)  // century
    }

    @Test(arguments: [
        (Int64(0), [UInt8(0x00), 0x00, 0x00, 0x05, 0x01, 0x01, 0x70, 0x19]),             // 1970-01-01 Thu
        (Int64(946_684_800), [UInt8(0x00), 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]),   // 2000-01-01 Sat
        (Int64(4_102_403_405), [UInt8(0x05), 0x30, 0x12, 0x05, 0x31, 0x12, 0x99, 0x20]), // 2099-12-31 Thu
        (Int64(-1), [UInt8(0x59), 0x59, 0x23, 0x04, 0x31, 0x12, 0x69, 0x19]),           // 1969-12-31 Wed
    ])
    func centuryAndCalendarEdges(seconds: Int64, expected: [UInt8]) {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: seconds))
        let indexes: [UInt8] = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32]
        #expect(indexes.map { rtc.value(at: $0) } == expected)
    }

    @Test func calendarAgreesWithGmtimeOverRandomInstants() {
        var random = SplitMix64(seed: 0xc10c)
        let clock = FixedWallClock(seconds: 0)
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: clock)
        rtc.store(0x06, at: 0x0b)  // binary, 24-hour: easier to compare
        for _ in 0..<2000 {
            // 1900 ... 2300, both sides of the epoch.
            let seconds = Int64(random.next() % 12_622_780_800) - 2_208_988_800
            clock.set(seconds: seconds)
            var time = time_t(seconds)
            var broken = tm()
            gmtime_r(&time, &broken)
            let year = Int(broken.tm_year) + 1900
            #expect(rtc.value(at: 0x00) == UInt8(broken.tm_sec))
            #expect(rtc.value(at: 0x02) == UInt8(broken.tm_min))
            #expect(rtc.value(at: 0x04) == UInt8(broken.tm_hour))
            #expect(rtc.value(at: 0x06) == UInt8(broken.tm_wday + 1))
            #expect(rtc.value(at: 0x07) == UInt8(broken.tm_mday))
            #expect(rtc.value(at: 0x08) == UInt8(broken.tm_mon + 1))
            #expect(rtc.value(at: 0x09) == UInt8(year % 100))
            #expect(rtc.value(at: 0x32) == UInt8(year / 100))
        }
    }

    @Test func statusRegistersLinuxExpects() {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0))
        #expect(rtc.value(at: 0x0a) == 0x20)
        #expect(rtc.value(at: 0x0b) == 0x02)  // 24-hour, BCD
        #expect(rtc.value(at: 0x0c) == 0x00)
        #expect(rtc.value(at: 0x0d) == 0x80)  // RAM and time valid
        rtc.store(0x00, at: 0x0d)
        rtc.store(0xff, at: 0x0c)
        #expect(rtc.value(at: 0x0d) == 0x80)
        #expect(rtc.value(at: 0x0c) == 0x00)
    }

    @Test func updateInProgressDuringTheLastMomentOfEachSecond() {
        let clock = FixedWallClock(seconds: leapDayEvening, nanoseconds: 999_900_000)
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: clock)
        #expect(rtc.value(at: 0x0a) == 0xa0)
        clock.set(seconds: leapDayEvening, nanoseconds: 999_700_000)
        #expect(rtc.value(at: 0x0a) == 0x20)
        clock.set(seconds: leapDayEvening, nanoseconds: 0)
        #expect(rtc.value(at: 0x0a) == 0x20)
        rtc.store(0xa6, at: 0x0a)  // UIP is read-only; the rate bits are kept
        #expect(rtc.value(at: 0x0a) == 0x26)
    }

    @Test func registerBSelectsBinaryAndTwelveHourModes() {
        let clock = FixedWallClock(seconds: leapDayEvening)  // 23:59:58
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: clock)
        rtc.store(0x06, at: 0x0b)
        #expect(rtc.value(at: 0x04) == 23)
        #expect(rtc.value(at: 0x32) == 20)
        rtc.store(0x00, at: 0x0b)                  // 12-hour BCD: 11 PM
        #expect(rtc.value(at: 0x04) == 0x91)
        clock.set(seconds: leapDayEvening + 2)     // 2024-03-01 00:00:00: 12 AM
        #expect(rtc.value(at: 0x04) == 0x12)
        #expect(rtc.value(at: 0x08) == 0x03)
        clock.set(seconds: leapDayEvening + 2 + 12 * 3600)  // noon: 12 PM
        #expect(rtc.value(at: 0x04) == 0x92)
        rtc.store(0x04, at: 0x0b)                  // 12-hour binary
        #expect(rtc.value(at: 0x04) == 0x8c)
    }

    @Test func memorySizeBytesForOneGiB() {
        let rtc = CMOSRTC(memoryBelow4G: 1 << 30, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0))
        // (1 GiB - 16 MiB) / 64 KiB = 16128 = 0x3F00.
        #expect(rtc.value(at: 0x34) == 0x00)
        #expect(rtc.value(at: 0x35) == 0x3f)
        #expect([0x5b, 0x5c, 0x5d].map { rtc.value(at: $0) } == [0, 0, 0])
    }

    @Test func memorySizeBytesForSixGiB() {
        // Cloud Hypervisor's layout puts 3 GiB below the 32-bit hole and the rest above 4 GiB.
        let rtc = CMOSRTC(memoryBelow4G: 3 << 30, memoryAbove4G: 3 << 30, clock: FixedWallClock(seconds: 0))
        #expect(rtc.value(at: 0x34) == 0x00)
        #expect(rtc.value(at: 0x35) == 0xbf)  // (3 GiB - 16 MiB) / 64 KiB = 0xBF00
        #expect([0x5b, 0x5c, 0x5d].map { rtc.value(at: $0) } == [0x00, 0xc0, 0x00])  // 0xC000
    }

    @Test func memorySizeBytesSaturate() {
        let tiny = CMOSRTC(memoryBelow4G: 8 << 20, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0))
        #expect(tiny.value(at: 0x34) == 0 && tiny.value(at: 0x35) == 0)
        let huge = CMOSRTC(memoryBelow4G: .max, memoryAbove4G: .max, clock: FixedWallClock(seconds: 0))
        #expect(huge.value(at: 0x34) == 0xff && huge.value(at: 0x35) == 0xff)
        #expect([0x5b, 0x5c, 0x5d].map { huge.value(at: $0) } == [0xff, 0xff, 0xff])
    }

    @Test func nmiDisableBitIsMaskedOffTheIndex() {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: leapDayEvening))
        #expect(!rtc.nmiDisabled)
        #expect(rtc.value(at: 0x80 | 0x09) == 0x24)
        #expect(rtc.nmiDisabled)
        #expect(rtc.readByte(0) == 0x89)  // the index port reads back what was written
        rtc.store(0x5a, at: 0x80 | 0x40)
        #expect(rtc.value(at: 0x40) == 0x5a)
        #expect(!rtc.nmiDisabled)
    }

    @Test func timeWritesAreIgnoredButRAMKeepsData() {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: leapDayEvening))
        rtc.store(0x00, at: 0x00)
        rtc.store(0x01, at: 0x09)
        rtc.store(0x19, at: 0x32)
        #expect(rtc.value(at: 0x00) == 0x58)
        #expect(rtc.value(at: 0x09) == 0x24)
        #expect(rtc.value(at: 0x32) == 0x20)
        for index: UInt8 in [0x01, 0x03, 0x05, 0x0e, 0x10, 0x7f] {
            rtc.store(index ^ 0xa5, at: index)
            #expect(rtc.value(at: index) == index ^ 0xa5)
        }
    }

    @Test func shutdownStatusZeroWithNMIDisabledRequestsReset() {
        let resets = ResetCounter()
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0), onReset: resets.handler)
        rtc.store(0x0a, at: 0x8f)  // not zero: plain RAM
        #expect(resets.count == 0)
        #expect(rtc.value(at: 0x0f) == 0x0a)
        rtc.store(0x00, at: 0x0f)  // NMI enabled: plain RAM
        #expect(resets.count == 0)
        rtc.store(0x00, at: 0x8f)
        #expect(resets.count == 1)
        #expect(rtc.resetRequests == 1)

        let noHandler = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0))
        noHandler.store(0x0a, at: 0x0f)
        noHandler.store(0x00, at: 0x8f)
        #expect(noHandler.value(at: 0x0f) == 0x00)
        #expect(noHandler.resetRequests == 0)
    }

    @Test func widerAccessesAndOtherOffsetsDoNothing() {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0, clock: FixedWallClock(seconds: 0))
        rtc.store(0x11, at: 0x40)
        rtc.write(offset: 0, size: 2, value: 0x41)
        rtc.write(offset: 1, size: 2, value: 0x22)
        #expect(rtc.readByte(1) == 0x11)
        #expect(rtc.read(offset: 1, size: 4) == 0)
        rtc.writeByte(2, 0x41)
        #expect(rtc.readByte(2) == 0)
        #expect(rtc.readByte(1) == 0x11)
    }

    @Test func systemClockGivesAPlausibleYear() {
        let rtc = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0)
        #expect(rtc.value(at: 0x32) == 0x20)
        #expect(SystemWallClock().now().seconds > 1_700_000_000)
    }
}
