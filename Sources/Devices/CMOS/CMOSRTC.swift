import DeviceModel
import Synchronization

/// The PC's battery-backed CMOS memory and MC146818 real-time clock at ports `0x70`/`0x71`.
///
/// Port `0x70` (offset 0) selects one of 128 CMOS bytes; its bit 7 is the NMI-disable
/// bit of the real chipset and is masked off when addressing (Cloud Hypervisor does the
/// same). Port `0x71` (offset 1) reads or writes the selected byte:
///
/// | index | content |
/// |---|---|
/// | `0x00`, `0x02`, `0x04` | seconds, minutes, hours of the injected ``WallClock`` (UTC) |
/// | `0x06`, `0x07`, `0x08`, `0x09` | weekday (1 = Sunday), day, month, year within the century |
/// | `0x32` | century |
/// | `0x0A` | register A: bit 7 "update in progress" during the last 244 µs of each second; bits 0-6 as written (initially `0x20`, the 32.768 kHz time base) |
/// | `0x0B` | register B, initially `0x02`: 24-hour mode, BCD; the guest may select binary (bit 2) or 12-hour mode (bit 1 clear) and the time registers follow |
/// | `0x0C` | register C: 0 (periodic, alarm and update interrupts are not emulated) |
/// | `0x0D` | register D: `0x80`, "RAM and time valid" |
/// | `0x34`, `0x35` | RAM between 16 MiB and 4 GiB in 64 KiB units (little-endian) |
/// | `0x5B` ... `0x5D` | RAM above 4 GiB in 64 KiB units (little-endian) |
/// | others | plain CMOS RAM |
///
/// The time registers always show the host clock: guest writes to them (and to the
/// century byte, register C and register D) are ignored, as Cloud Hypervisor
/// effectively does. The alarm registers (`0x01`, `0x03`, `0x05`) are kept as RAM.
/// Writing 0 to index `0x8F` (the shutdown status byte with NMIs disabled, which Linux's
/// real-mode reboot path does) calls the reset handler when one was given, as Cloud
/// Hypervisor does. Accesses wider than one byte read 0 and are ignored on write.
public final class CMOSRTC: BusDevice {
    /// The index port.
    public static let portBase: UInt64 = 0x70
    /// How many ports the device decodes (`0x70`, `0x71`).
    public static let portLength: UInt64 = 2
    /// How many bytes of CMOS memory there are.
    public static let size = 128
    /// The NMI-disable bit of the index port.
    public static let nmiDisableBit: UInt8 = 0x80

    /// Register indexes with special meaning.
    enum Index {
        static let seconds = 0x00
        static let minutes = 0x02
        static let hours = 0x04
        static let weekday = 0x06
        static let day = 0x07
        static let month = 0x08
        static let year = 0x09
        static let registerA = 0x0a
        static let registerB = 0x0b
        static let registerC = 0x0c
        static let registerD = 0x0d
        static let century = 0x32
        static let extendedMemoryLow = 0x34
        static let highMemoryLow = 0x5b
        /// The raw index byte (shutdown status, NMIs disabled) whose zero write means reset.
        static let resetIndex: UInt8 = 0x8f
    }

    /// Register A's update-in-progress bit.
    static let updateInProgress: UInt8 = 0x80
    /// Register B's 24-hour bit.
    static let hourMode24: UInt8 = 0x02
    /// Register B's binary (not BCD) data-mode bit.
    static let binaryMode: UInt8 = 0x04
    /// How long before each second boundary register A reports an update in progress:
    /// 8 periods of the 32.768 kHz oscillator, in nanoseconds.
    static let updateInProgressWindow: UInt32 = 244_140

    /// The name used in logs and bus errors.
    public let name: String
    private let clock: any WallClock
    private let onReset: ResetHandler?
    let state: Mutex<CMOSState>

    /// Creates the CMOS with the memory-size bytes a firmware or kernel reads at boot.
    ///
    /// - Parameters:
    ///   - memoryBelow4G: bytes of guest RAM below the 32-bit device hole (Cloud
    ///     Hypervisor passes `min(start of the 32-bit reserved area, RAM end)`); the part
    ///     above 16 MiB is stored at `0x34`/`0x35` in 64 KiB units, at most `0xFFFF`.
    ///   - memoryAbove4G: bytes of guest RAM from 4 GiB up; stored at `0x5B`-`0x5D` in
    ///     64 KiB units, at most `0xFF_FFFF`.
    ///   - clock: the source of the date and time.
    ///   - onReset: called when the guest writes 0 to index `0x8F`; `nil` keeps the write
    ///     as ordinary CMOS RAM.
    ///   - name: the name in logs and bus errors.
    public init(
        memoryBelow4G: UInt64, memoryAbove4G: UInt64, clock: any WallClock = SystemWallClock(),
        onReset: ResetHandler? = nil, name: String = "cmos"
    ) {
        self.name = name
        self.clock = clock
        self.onReset = onReset
        var memory = [UInt8](repeating: 0, count: Self.size)
        let unit: UInt64 = 64 * 1024
        let sixteenMiB: UInt64 = 16 * 1024 * 1024
        let extended = min(0xffff, memoryBelow4G > sixteenMiB ? (memoryBelow4G - sixteenMiB) / unit : 0)
        memory[Index.extendedMemoryLow] = UInt8(truncatingIfNeeded: extended)
        memory[Index.extendedMemoryLow + 1] = UInt8(truncatingIfNeeded: extended >> 8)
        let high = min(0xff_ffff, memoryAbove4G / unit)
        memory[Index.highMemoryLow] = UInt8(truncatingIfNeeded: high)
        memory[Index.highMemoryLow + 1] = UInt8(truncatingIfNeeded: high >> 8)
        memory[Index.highMemoryLow + 2] = UInt8(truncatingIfNeeded: high >> 16)
        memory[Index.registerA] = 0x20
        memory[Index.registerB] = Self.hourMode24
        state = Mutex(CMOSState(memory: memory))
    }

    /// Whether the guest last wrote the index port with the NMI-disable bit set.
    public var nmiDisabled: Bool {
        state.withLock { $0.rawIndex & Self.nmiDisableBit != 0 }
    }

    /// How many times the guest asked for a reset through index `0x8F`.
    public var resetRequests: Int {
        state.withLock { $0.resetRequests }
    }

    /// Offset 0 reads back the index byte last written; offset 1 reads the selected byte.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 1 else { return 0 }
        switch offset {
        case 0:
            return UInt64(state.withLock { $0.rawIndex })
        case 1:
            let (index, registerA, registerB, stored) = state.withLock { state in
                let index = Int(state.rawIndex & ~Self.nmiDisableBit)
                return (index, state.memory[Index.registerA], state.memory[Index.registerB], state.memory[index])
            }
            return UInt64(dataByte(index: index, registerA: registerA, registerB: registerB, stored: stored))
        default:
            return 0
        }
    }

    /// Offset 0 selects a byte (and the NMI-disable bit); offset 1 writes the selected byte.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 1 else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0:
            state.withLock { $0.rawIndex = byte }
        case 1:
            let reset = state.withLock { state -> Bool in
                if state.rawIndex == Index.resetIndex, byte == 0, onReset != nil {
                    state.resetRequests += 1
                    return true
                }
                state.store(byte, at: Int(state.rawIndex & ~Self.nmiDisableBit))
                return false
            }
            if reset { onReset?() }
        default:
            break
        }
    }

    /// The value of CMOS byte `index`: live clock fields, the status registers, or RAM.
    private func dataByte(index: Int, registerA: UInt8, registerB: UInt8, stored: UInt8) -> UInt8 {
        switch index {
        case Index.seconds, Index.minutes, Index.hours, Index.weekday, Index.day, Index.month,
            Index.year, Index.century:
            let time = CalendarTime(secondsSinceEpoch: clock.now().seconds)
            return Self.timeField(index: index, time: time, registerB: registerB)
        case Index.registerA:
            let inProgress = clock.now().nanoseconds >= 1_000_000_000 - Self.updateInProgressWindow
            return (registerA & ~Self.updateInProgress) | (inProgress ? Self.updateInProgress : 0)
        case Index.registerC:
            return 0
        case Index.registerD:
            return 0x80
        default:
            return stored
        }
    }

    /// One time register for `time`, encoded as register B asks (BCD or binary,
    /// 24-hour or 12-hour with bit 7 marking PM).
    static func timeField(index: Int, time: CalendarTime, registerB: UInt8) -> UInt8 {
        let binary = registerB & binaryMode != 0
        func encode(_ value: Int) -> UInt8 {
            let value = UInt8(clamping: value)
            return binary ? value : ((value / 10) << 4) | (value % 10)
        }
        // The RTC holds a 4-digit year only; other years wrap into 0 ... 9999.
        let year = Int(((time.year % 10_000) + 10_000) % 10_000)
        switch index {
        case Index.seconds: return encode(time.second)
        case Index.minutes: return encode(time.minute)
        case Index.hours:
            if registerB & hourMode24 != 0 { return encode(time.hour) }
            let twelveHour = time.hour % 12 == 0 ? 12 : time.hour % 12
            return encode(twelveHour) | (time.hour >= 12 ? 0x80 : 0)
        case Index.weekday: return encode(time.weekday)
        case Index.day: return encode(time.day)
        case Index.month: return encode(time.month)
        case Index.year: return encode(year % 100)
        case Index.century: return encode(year / 100)
        default: return 0
        }
    }
}

/// Everything the CMOS lock protects.
struct CMOSState: Sendable {
    /// The 128 bytes of CMOS memory (the time registers' slots are unused: time is live).
    var memory: [UInt8]
    /// The last byte written to the index port, NMI bit included.
    var rawIndex: UInt8 = 0
    /// How many resets the guest requested.
    var resetRequests = 0

    /// Stores a guest write to byte `index`, leaving read-only and live registers alone.
    mutating func store(_ byte: UInt8, at index: Int) {
        switch index {
        case CMOSRTC.Index.seconds, CMOSRTC.Index.minutes, CMOSRTC.Index.hours, CMOSRTC.Index.weekday,
            CMOSRTC.Index.day, CMOSRTC.Index.month, CMOSRTC.Index.year, CMOSRTC.Index.century,
            CMOSRTC.Index.registerC, CMOSRTC.Index.registerD:
            break
        case CMOSRTC.Index.registerA:
            memory[index] = byte & ~CMOSRTC.updateInProgress
        default:
            memory[index] = byte
        }
    }
}
