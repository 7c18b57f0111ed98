package ticket

import "sort"

// rangeList is a sorted list of disjoint, non-adjacent [start, end) ranges.
type rangeList [][2]int64

// add merges [start, end) into the list.
func (l *rangeList) add(start, end int64) {
	if end <= start {
		return
	}
	s := *l
	// First range that ends at or after start.
	i := sort.Search(len(s), func(i int) bool { return s[i][1] >= start })
	j := i
	for j < len(s) && s[j][0] <= end {
		start = min(start, s[j][0])
		end = max(end, s[j][1])
		j++
	}
	merged := [2]int64{start, end}
	s = append(s[:i], append([][2]int64{merged}, s[j:]...)...)
	*l = s
}

// sum is the number of bytes covered.
func (l rangeList) sum() int64 {
	var n int64
	for _, r := range l {
		n += r[1] - r[0]
	}
	return n
}
