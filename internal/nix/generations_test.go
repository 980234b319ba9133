package nix

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestSelectForDeletion(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	gens := []Generation{
		{Number: 1, Date: now.Add(-40 * day)},
		{Number: 2, Date: now.Add(-35 * day)},
		{Number: 3, Date: now.Add(-20 * day)},
		{Number: 5, Date: now.Add(-10 * day)},
		{Number: 6, Date: now.Add(-1 * day)},
		{Number: 7, Date: now},
	}
	cases := []struct {
		current int
		args    []string
		want    []int
	}{
		{7, []string{"old"}, []int{1, 2, 3, 5, 6}},
		{5, []string{"old"}, []int{1, 2, 3, 6, 7}},
		{7, []string{"2", "3"}, []int{2, 3}},
		{7, []string{"+2"}, []int{1, 2, 3, 5}},
		{7, []string{"+10"}, nil},
		{5, []string{"+2"}, []int{1, 2}}, // 6 and 7 are newer than the current: kept
		{7, []string{"30d"}, []int{1}},   // 2 was current 30 days ago: kept
		{7, []string{"15d"}, []int{1, 2}},
		{2, []string{"30d"}, []int{1}},
		{1, []string{"30d"}, nil}, // the current one is never selected
		{7, []string{"0d"}, []int{1, 2, 3, 5}},
		{7, []string{"106752d"}, nil}, // more days than a time.Duration holds
		{7, []string{"1", "old"}, []int{1, 2, 3, 5, 6}},
	}
	for _, c := range cases {
		got, err := SelectForDeletion(gens, c.current, c.args, now)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("current %d, %v: got %v, %v; want %v", c.current, c.args, got, err, c.want)
		}
	}
	for _, args := range [][]string{nil, {"7"}, {"4"}, {"x"}, {"+0"}, {"+x"}, {"-1d"}, {"xd"}} {
		if _, err := SelectForDeletion(gens, 7, args, now); !errors.Is(err, ErrBadGenerations) {
			t.Errorf("%v: got %v, want ErrBadGenerations", args, err)
		}
	}
}
