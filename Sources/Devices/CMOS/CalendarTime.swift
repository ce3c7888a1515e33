/// A UTC calendar date and time of day, broken out of a count of seconds since 1970.
///
/// Uses the proleptic Gregorian calendar with no leap seconds, as `gmtime_r` does.
struct CalendarTime: Equatable, Sendable {
    /// The full year, for example 2024.
    var year: Int64
    /// 1 (January) ... 12 (December).
    var month: Int
    /// 1 ... 31.
    var day: Int
    /// 0 ... 23.
    var hour: Int
    /// 0 ... 59.
    var minute: Int
    /// 0 ... 59.
    var second: Int
    /// 1 (Sunday) ... 7 (Saturday), the MC146818's day-of-week numbering.
    var weekday: Int

    /// Breaks `secondsSinceEpoch` (UTC, possibly negative) into calendar fields.
    init(secondsSinceEpoch: Int64) {
        let secondsPerDay: Int64 = 86_400
        // Floor division, so instants before 1970 land on the right day.
        var days = secondsSinceEpoch / secondsPerDay
        var secondOfDay = secondsSinceEpoch % secondsPerDay
        if secondOfDay < 0 {
            secondOfDay += secondsPerDay
            days -= 1
        }
        hour = Int(secondOfDay / 3600)
        minute = Int(secondOfDay % 3600 / 60)
        second = Int(secondOfDay % 60)
        // 1970-01-01 was a Thursday (weekday index 4 when Sunday is 0).
        let weekdayIndex = ((days % 7) + 7 + 4) % 7
        weekday = Int(weekdayIndex) + 1
        (year, month, day) = Self.civilDate(daysSinceEpoch: days)
    }

    /// Converts a day count since 1970-01-01 into a Gregorian (year, month, day).
    ///
    /// Works in 400-year cycles of 146,097 days counted from 0000-03-01, so that the leap
    /// day falls at the end of each counted year.
    private static func civilDate(daysSinceEpoch: Int64) -> (Int64, Int, Int) {
        let daysPerCycle: Int64 = 146_097
        // Days from 0000-03-01 to 1970-01-01.
        let shifted = daysSinceEpoch + 719_468
        let cycle = (shifted >= 0 ? shifted : shifted - (daysPerCycle - 1)) / daysPerCycle
        let dayOfCycle = shifted - cycle * daysPerCycle                       // 0 ... 146096
        let yearOfCycle = (dayOfCycle - dayOfCycle / 1460 + dayOfCycle / 36_524
            - dayOfCycle / (daysPerCycle - 1)) / 365                         // 0 ... 399
        let dayOfYear = dayOfCycle - (365 * yearOfCycle + yearOfCycle / 4 - yearOfCycle / 100)
        let marchMonth = (5 * dayOfYear + 2) / 153                            // 0 = March ... 11 = February
        let day = dayOfYear - (153 * marchMonth + 2) / 5 + 1
        let month = marchMonth < 10 ? marchMonth + 3 : marchMonth - 9
        let year = yearOfCycle + cycle * 400 + (month <= 2 ? 1 : 0)
        return (year, Int(month), Int(day))
    }
}
