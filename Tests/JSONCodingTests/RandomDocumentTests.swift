import Foundation
import JSONCoding
import Testing
import TestSupport

/// A random document from `random`: every kind of value, keys and strings with escapes and
/// non-ASCII, numbers at the edges of each case.
func randomDocument(_ random: inout SplitMix64, depth: Int = 0) -> JSONValue {
    let leaf = depth >= 5 || random.next() % 3 == 0
    switch random.next() % (leaf ? 6 : 8) {
    case 0: return .null
    case 1: return .bool(random.next() & 1 == 0)
    case 2:
        let edges: [Int64] = [0, -1, 1, .min, .max]
        return .integer(random.next() % 4 == 0 ? edges[Int(random.next() % 5)] : Int64(bitPattern: random.next()) >> (random.next() % 64))
    case 3: return .unsigned(UInt64(Int64.max) + 1 + random.next() % UInt64(Int64.max))
    case 4:
        let bits = Double(bitPattern: random.next())
        let value = bits.isFinite ? bits : Double(Int64(bitPattern: random.next())) / 1000
        return .double(value)
    case 5: return .string(randomString(&random))
    case 6: return .array((0..<Int(random.next() % 6)).map { _ in randomDocument(&random, depth: depth + 1) })
    default:
        var seen = Set<String>()
        var members: [(key: String, value: JSONValue)] = []
        for _ in 0..<Int(random.next() % 6) {
            let key = randomString(&random)
            if seen.insert(key).inserted { members.append((key, randomDocument(&random, depth: depth + 1))) }
        }
        return .object(members)
    }
}

func randomString(_ random: inout SplitMix64) -> String {
    let pieces = ["a", "Z", "/", "\"", "\\", "\n", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "ß", "€", "😀", "\u{2028}", " ", "0", "{", "]"]
    return (0..<Int(random.next() % 8)).map { _ in pieces[Int(random.next() % UInt64(pieces.count))] }.joined()
}

@Suite("JSON random documents")
struct RandomDocumentTests {
    @Test("5,000 seeded random documents round-trip through serialize and parse, and Foundation parses them too")
    func roundTrips() throws {
        var random = SplitMix64(seed: 0x4A53_4F4E)
        for index in 0..<5000 {
            let document = randomDocument(&random)
            let sorted = index % 2 == 0
            let text = try document.serialized(sortedKeys: sorted)
            let parsed = try JSONParser.parse(text)
            if sorted {
                #expect(try parsed.serialized(sortedKeys: true) == text, "document \(index)")
            } else {
                #expect(parsed == document, "document \(index): \(String(decoding: text, as: UTF8.self))")
            }
            if index % 10 == 0 {
                #expect((try? JSONSerialization.jsonObject(with: Data(text), options: [.fragmentsAllowed])) != nil,
                        "Foundation refuses document \(index): \(String(decoding: text, as: UTF8.self))")
            }
        }
    }

    @Test("2,000 mutated documents never crash the parser; those it accepts round-trip")
    func mutations() throws {
        var random = SplitMix64(seed: 0x6D75_7461)
        let alphabet = Array(#"{}[],:"\ -+.eE0123456789tfnulrsa/"#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xED, 0xF4, 0xFF]
        var accepted = 0
        for _ in 0..<2000 {
            var bytes = try randomDocument(&random).serialized()
            for _ in 0..<(1 + Int(random.next() % 3)) where !bytes.isEmpty {
                let position = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes[position] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: position)
                default: bytes.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: position)
                }
            }
            guard let value = try? JSONParser.parse(bytes) else { continue }
            accepted += 1
            #expect(try JSONParser.parse(value.serialized()) == value)
        }
        #expect(accepted > 0)
    }
}
